"""MNIST without TensorFlow: the download into the cache folder, against a local
HTTP server on 127.0.0.1 serving the synthetic IDX fixture (never the network)."""

import gzip
import hashlib
import http.server
import os
import re
import sys
import threading

import numpy as np
import pytest

from advjax import data, download

STEMS = tuple(data.MNIST_SHA256)


class _FakeTFDS:
  """Stands in for an installed tensorflow_datasets holding 3 images."""

  def builder(self, name):
    return type("B", (), {"is_prepared": lambda _: True})()

  def load(self, name, split, batch_size):
    return {"image": np.zeros((3, 28, 28, 1), np.uint8), "label": np.zeros(3)}

  def as_numpy(self, ds):
    return ds


class _Handler(http.server.BaseHTTPRequestHandler):
  """GET with `Range: bytes=N-`; a path in `server.cut` is sent only in part, once."""

  def do_GET(self):  # pylint: disable=invalid-name
    srv = self.server
    srv.log.append((self.path, self.headers.get("Range")))
    body = srv.files.get(self.path)
    if body is None:
      self.send_error(404)
      return
    m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
    start = int(m.group(1)) if m else 0
    if start >= len(body) and m:
      self.send_error(416)
      return
    self.send_response(206 if m else 200)
    if m:
      self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
    self.send_header("Content-Length", str(len(body) - start))
    self.end_headers()
    stop = srv.cut.pop(self.path, len(body))  # a cut: the connection drops early
    self.wfile.write(body[start:stop])

  def log_message(self, *args):  # quiet
    pass


@pytest.fixture
def mirror(idx_dir, tmp_path, monkeypatch):
  """A server of idx_dir's four .gz files, the cache in tmp_path, their sums injected."""
  srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)  # a free port
  srv.files = {f"/mnist/{s}.gz": (idx_dir / f"{s}.gz").read_bytes() for s in STEMS}
  srv.log, srv.cut = [], {}
  thread = threading.Thread(target=srv.serve_forever, daemon=True)
  thread.start()
  sums = {s: hashlib.sha256(gzip.decompress(srv.files[f"/mnist/{s}.gz"])).hexdigest()
          for s in STEMS}
  monkeypatch.setattr(data, "MNIST_SHA256", sums)
  for var in data.ENV_VARS.values():
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(data, "DEFAULT_DIRS", {})
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  monkeypatch.setenv(data.MIRROR_VAR, f"http://127.0.0.1:{srv.server_port}/mnist/")
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # not installed
  yield srv
  srv.shutdown()
  srv.server_close()
  thread.join()


def test_fresh_cache_downloads_four_files_once(mirror, idx_dir, tmp_path, capsys):
  te = data.load("mnist", "test")
  folder = tmp_path / "cache" / "advjax" / "mnist"
  assert data.cache_dir() == str(folder)
  assert sorted(p for p, _ in mirror.log) == sorted(mirror.files)  # all four, once
  assert all(r is None for _, r in mirror.log)
  for s in STEMS:
    assert (folder / f"{s}.gz").read_bytes() == (idx_dir / f"{s}.gz").read_bytes()
  assert not list(folder.glob("*.part"))
  np.testing.assert_array_equal(te.y, data.load("mnist", "test", str(idx_dir)).y)
  np.testing.assert_array_equal(data.load("mnist", "train").x,
                                data.load("mnist", "train", str(idx_dir)).x)
  assert len(mirror.log) == 4  # the second and third loads read the cache
  assert "t10k-images-idx3-ubyte.gz" in capsys.readouterr().err  # the progress bar


def test_cut_download_resumes_with_a_range_request(mirror, tmp_path):
  path = "/mnist/train-images-idx3-ubyte.gz"
  size = len(mirror.files[path])
  mirror.cut[path] = size // 2
  with pytest.raises(data.DataError, match="closed after") as e:
    data.load("mnist", "train")
  assert "\n" not in str(e.value)
  dest = tmp_path / "cache" / "advjax" / "mnist" / "train-images-idx3-ubyte.gz"
  part = download.part_path(str(dest), os.environ[data.MIRROR_VAR] + path[7:])
  assert os.path.getsize(part) == size // 2 and not dest.exists()
  assert len(data.load("mnist", "train").y) == 20
  assert (path, f"bytes={size // 2}-") in mirror.log  # resumed, not restarted
  assert [p for p, _ in mirror.log].count(path) == 2 and not os.path.exists(part)
  assert dest.read_bytes() == mirror.files[path]


def test_corrupt_copy_is_refused_in_one_line_and_deleted(mirror, tmp_path, monkeypatch):
  path = "/mnist/t10k-labels-idx1-ubyte.gz"
  labels = bytearray(gzip.decompress(mirror.files[path]))
  labels[-1] = (labels[-1] + 1) % 10  # one label changed: still a valid IDX file
  mirror.files[path] = gzip.compress(bytes(labels))
  got = hashlib.sha256(bytes(labels)).hexdigest()
  with pytest.raises(data.DataError) as e:
    data.load("mnist", "test")
  msg = str(e.value)
  assert "\n" not in msg and "t10k-labels-idx1-ubyte.gz" in msg
  assert f"SHA-256 {got}, expected {data.MNIST_SHA256['t10k-labels-idx1-ubyte']}" in msg
  assert data.MIRROR_VAR in msg and data.ENV_VAR in msg  # what to do
  folder = tmp_path / "cache" / "advjax" / "mnist"
  assert not (folder / "t10k-labels-idx1-ubyte.gz").exists()
  assert not list(folder.glob("t10k-labels*"))  # no part left to resume from
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", _FakeTFDS())
  with pytest.raises(data.DataError, match="expected"):  # never hidden by TFDS
    data.load("mnist", "test")


def test_not_gzip_is_refused(mirror, tmp_path):
  mirror.files["/mnist/t10k-images-idx3-ubyte.gz"] = b"<html>not found</html>"
  with pytest.raises(data.DataError, match="t10k-images.*unreadable.*expected"):
    data.load("mnist", "test")


def test_mirror_list_tried_in_order(mirror, monkeypatch):
  base = os.environ[data.MIRROR_VAR]
  dead = base.replace("/mnist/", "/gone/")  # answers 404
  monkeypatch.setenv(data.MIRROR_VAR, f"{dead} {base}")
  assert data.mnist_mirrors() == (dead, base)
  assert len(data.load("mnist", "test").y) == 10
  gone = [p for p, _ in mirror.log if p.startswith("/gone/")]
  assert len(gone) == 4 and len(mirror.log) == 8  # each file: 404, then the next
  monkeypatch.delenv(data.MIRROR_VAR)
  assert data.mnist_mirrors() == data.MNIST_MIRRORS


def test_unreachable_mirror_falls_back_to_tfds_or_says_what_to_do(mirror, monkeypatch):
  monkeypatch.setenv(data.MIRROR_VAR, "http://127.0.0.1:9/mnist/")  # refused
  with pytest.raises(data.DataError, match=f"Run again, set {data.MIRROR_VAR}") as e:
    data.load("mnist", "test")
  assert "\n" not in str(e.value) and "127.0.0.1:9" in str(e.value)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", _FakeTFDS())
  assert len(data.load("mnist", "test").y) == 3  # installed: TFDS's copy


def test_tfds_by_choice_downloads_nothing(mirror, monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", _FakeTFDS())
  monkeypatch.setenv(data.MIRROR_VAR, "tfds")
  assert len(data.load("mnist", "train").y) == 3
  assert mirror.log == [] and not (tmp_path / "cache").exists()
