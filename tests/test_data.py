"""IDX parsing, errors on broken files, the P1/P2 split."""

import gzip
import os

import numpy as np
import pytest

from advjax import data


def test_parse_synthetic_idx(idx_dir):
  tr = data.load("mnist", "train", str(idx_dir))
  te = data.load("mnist", "test", str(idx_dir))
  assert tr.x.shape == (20, 28, 28, 1) and te.x.shape == (10, 28, 28, 1)
  assert tr.x.dtype == np.float32 and tr.y.dtype == np.int32
  raw = np.frombuffer(gzip.open(idx_dir / "train-images-idx3-ubyte.gz").read(),
                      np.uint8, offset=16).reshape(20, 28, 28)
  np.testing.assert_array_equal(tr.x[..., 0], raw / np.float32(255))
  assert 0.0 <= tr.x.min() and tr.x.max() <= 1.0


def test_counts_come_from_header(tmp_path):
  data.write_idx(str(tmp_path / "t10k-images-idx3-ubyte.gz"),
                 np.zeros((3, 28, 28), np.uint8))
  data.write_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz"), np.arange(3, dtype=np.uint8))
  assert len(data.load("mnist", "test", str(tmp_path)).y) == 3


def test_truncated_file_names_file(idx_dir):
  path = idx_dir / "train-images-idx3-ubyte.gz"
  buf = gzip.open(path).read()
  with gzip.open(path, "wb") as f:
    f.write(buf[:-100])
  with pytest.raises(data.DataError, match="train-images.*truncated"):
    data.load("mnist", "train", str(idx_dir))


def test_not_gzip_is_an_error(idx_dir):
  (idx_dir / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage, not gzip")
  with pytest.raises(data.DataError, match="train-labels"):
    data.load("mnist", "train", str(idx_dir))


def test_wrong_magic(idx_dir):
  os.remove(idx_dir / "t10k-labels-idx1-ubyte.gz")
  data.write_idx(str(idx_dir / "t10k-labels-idx1-ubyte.gz"),
                 np.zeros((10, 28, 28), np.uint8))  # an image file in its place
  with pytest.raises(data.DataError, match="magic number"):
    data.load("mnist", "test", str(idx_dir))


def test_count_mismatch(idx_dir):
  data.write_idx(str(idx_dir / "t10k-labels-idx1-ubyte.gz"), np.zeros(7, np.uint8))
  with pytest.raises(data.DataError, match="10 test images but 7 labels"):
    data.load("mnist", "test", str(idx_dir))


def test_missing_file_and_folder(idx_dir, tmp_path):
  os.remove(idx_dir / "t10k-images-idx3-ubyte.gz")
  with pytest.raises(data.DataError, match="t10k-images.*not found"):
    data.load("mnist", "test", str(idx_dir))
  with pytest.raises(data.DataError, match="does not exist"):
    data.load("mnist", "test", str(tmp_path / "nope"))


def test_env_var_is_used(idx_dir, monkeypatch):
  monkeypatch.setenv(data.ENV_VAR, str(idx_dir))
  assert len(data.load("mnist", "train").y) == 20


def test_bad_names():
  with pytest.raises(ValueError, match="dataset"):
    data.load("cifar", "train", "/tmp")
  with pytest.raises(ValueError, match="split"):
    data.load("mnist", "val", "/tmp")


def test_halves_disjoint_and_deterministic():
  p1, p2 = data.halves(101, seed=3)
  assert len(p1) == 50 and len(p2) == 51
  assert not set(p1) & set(p2) and set(p1) | set(p2) == set(range(101))
  q1, _ = data.halves(101, seed=3)
  np.testing.assert_array_equal(p1, q1)
  assert not np.array_equal(p1, data.halves(101, seed=4)[0])


def test_real_mnist_counts(mnist_dir):
  """The full official MNIST: 60,000 + 10,000 images, class counts of its README."""
  tr = data.load("mnist", "train", mnist_dir)
  te = data.load("mnist", "test", mnist_dir)
  assert tr.x.shape == (60000, 28, 28, 1) and te.x.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(
      np.bincount(tr.y), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
  np.testing.assert_array_equal(
      np.bincount(te.y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
  p1, p2 = data.halves(len(tr.y))  # Tables 3-4: disjoint 30,000-image halves
  assert len(p1) == len(p2) == 30000 and not set(p1) & set(p2)


def test_mnist_folder_is_never_read_as_fashion(idx_dir, monkeypatch, tmp_path):
  monkeypatch.setenv(data.ENV_VAR, str(idx_dir))
  monkeypatch.setenv(data.ENV_VARS["fashion_mnist"], str(tmp_path / "fashion"))
  with pytest.raises(data.DataError, match="fashion"):
    data.load("fashion_mnist", "train")  # its own variable, not ADVJAX_DATA_DIR


class _FakeTFDS:
  """Stands in for tensorflow_datasets: records downloads, never does one."""

  def __init__(self, prepared):
    self.prepared, self.loads = prepared, []

  def builder(self, name):
    return type("B", (), {"is_prepared": lambda _: self.prepared})()

  def load(self, name, split, batch_size):
    self.loads.append((name, split))
    return {"image": np.zeros((2, 28, 28, 1), np.uint8), "label": np.zeros(2)}

  def as_numpy(self, ds):
    return ds


def _no_folder(monkeypatch, prepared, online):
  """No data_dir, no env var, no default folder; TFDS faked (and MNIST's chosen
  over its download, tests/test_download.py), network mocked."""
  import sys
  fake, probes = _FakeTFDS(prepared), []
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
  for var in data.ENV_VARS.values():
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(data, "DEFAULT_DIRS", {})
  monkeypatch.setenv(data.MIRROR_VAR, "tfds")
  monkeypatch.setattr(data, "network_reachable",
                      lambda host, port, timeout=3.0: probes.append(host) or online)
  return fake, probes


@pytest.mark.parametrize("name", data.DATASETS)
def test_no_folder_and_no_network_fails_fast(monkeypatch, name):
  """TFDS retried the download for ~3.4 minutes; now the probe fails first
  and the error names what to pass, without asking TFDS to download."""
  fake, probes = _no_folder(monkeypatch, prepared=False, online=False)
  with pytest.raises(data.DataError,
                     match=f"unreachable: set {data.ENV_VARS[name]} or pass data_dir=") as e:
    data.load(name, "test")
  assert fake.loads == [] and probes == [data.TFDS_HOSTS[name][0]]
  assert "\n" not in str(e.value)


def test_tfds_cache_or_network_still_loads(monkeypatch):
  fake, probes = _no_folder(monkeypatch, prepared=True, online=False)
  assert len(data.load("mnist", "test").y) == 2  # cached: no probe at all
  assert probes == [] and fake.loads == [("mnist", "test")]
  fake, probes = _no_folder(monkeypatch, prepared=False, online=True)
  assert len(data.load("mnist", "train").y) == 2 and fake.loads == [("mnist", "train")]


def test_network_probe_is_a_short_connection(monkeypatch):
  import socket
  calls = []
  def refuse(addr, timeout):
    calls.append((addr, timeout))
    raise OSError("unreachable")
  monkeypatch.setattr(socket, "create_connection", refuse)
  assert data.network_reachable("example.invalid", 443) is False
  assert calls == [(("example.invalid", 443), 3.0)]
