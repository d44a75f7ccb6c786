"""MNIST and Fashion-MNIST as float32 images in [0, 1] (Szegedy et al. §4.2).

Data comes from, in order:
  1. a folder holding the four official IDX files: the ``data_dir`` argument, or
     the dataset's environment variable (``ADVJAX_DATA_DIR`` for MNIST,
     ``ADVJAX_FASHION_MNIST_DIR`` for Fashion-MNIST, whose default is Debian's
     ``dataset-fashion-mnist`` folder ``/usr/share/datasets/fashion-mnist``);
  2. MNIST only: the user's cache folder (``$XDG_CACHE_HOME/advjax/mnist``, by
     default ``~/.cache/advjax/mnist``), where the four files are downloaded
     once from ``MNIST_MIRRORS`` (or the URL prefixes in ``ADVJAX_MNIST_MIRROR``),
     resumably, each checked against the published SHA-256 of its decompressed
     content before it is kept;
  3. tensorflow-datasets (``mnist``, ``fashion_mnist``): Fashion-MNIST without a
     folder; MNIST when no mirror can be reached and TFDS is installed, or when
     ``ADVJAX_MNIST_MIRROR=tfds`` asks for it.
IDX files do not say which dataset they hold, so each dataset has its own
variable: MNIST's folder is never read as Fashion-MNIST.

A folder that is given but broken is an error, never a silent fallback; so is
a download whose content fails its checksum. Nor does TFDS get to retry a
download for minutes without a network: when the dataset is not in its cache,
a 3 s connection probe of its download host comes first, and failing it is an
error that says which folder to pass.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import socket
import struct
from typing import NamedTuple

import numpy as np

from advjax import download

ENV_VAR = "ADVJAX_DATA_DIR"
ENV_VARS = {"mnist": ENV_VAR, "fashion_mnist": "ADVJAX_FASHION_MNIST_DIR"}
DEFAULT_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
DATASETS = ("mnist", "fashion_mnist")
SPLITS = ("train", "test")
_PREFIX = {"train": "train", "test": "t10k"}
_MAGIC = {"images": 0x00000803, "labels": 0x00000801}
# Where TFDS's builders download each dataset from.
TFDS_HOSTS = {"mnist": ("storage.googleapis.com", 443),
              "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80)}
MIRROR_VAR = "ADVJAX_MNIST_MIRROR"
# torchvision's mirrors of the four official .gz files, tried in order.
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")
# The published SHA-256 of each official file's decompressed content (the IDX
# bytes). Not of the .gz files: faithful copies differ in their gzip wrapping.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


class DataError(ValueError):
  """A data file is missing, truncated or corrupt."""


class Dataset(NamedTuple):
  """Images (N, 28, 28, 1) float32 in [0, 1] and labels (N,) int32."""
  x: np.ndarray
  y: np.ndarray


def _open(path: str) -> bytes:
  """Reads an IDX file, gzipped or not, naming the file on failure."""
  for p in (path, path + ".gz"):
    if os.path.exists(p):
      try:
        with (gzip.open(p, "rb") if p.endswith(".gz") else open(p, "rb")) as f:
          return f.read()
      except (OSError, EOFError) as e:
        raise DataError(f"{p}: cannot be read ({e}); the file is truncated or "
                        "not gzip. Download it again.") from e
  raise DataError(f"{path}(.gz) not found. Put the four official IDX files in "
                  f"that folder, or unset {ENV_VAR} / pass data_dir=None to download "
                  "MNIST into the cache folder.")


def parse_idx(buf: bytes, kind: str, name: str = "<bytes>") -> np.ndarray:
  """Parses an IDX buffer of `kind` 'images' (N, R, C) or 'labels' (N,) as uint8."""
  ndim = 3 if kind == "images" else 1
  head = 4 + 4 * ndim
  if len(buf) < head:
    raise DataError(f"{name}: {len(buf)} bytes is shorter than the IDX header.")
  magic = struct.unpack(">I", buf[:4])[0]
  if magic != _MAGIC[kind]:
    raise DataError(f"{name}: magic number {magic:#010x}, expected "
                    f"{_MAGIC[kind]:#010x} for IDX {kind}; wrong or corrupt file.")
  dims = struct.unpack(">" + "I" * ndim, buf[4:head])
  n = int(np.prod(dims))
  if len(buf) - head != n:
    raise DataError(f"{name}: header says {dims} ({n} bytes) but the file holds "
                    f"{len(buf) - head}; the file is truncated or corrupt.")
  return np.frombuffer(buf, np.uint8, offset=head).reshape(dims)


def _load_idx(folder: str, split: str) -> Dataset:
  """Loads one split from a folder of official IDX files."""
  base = os.path.join(folder, _PREFIX[split])
  paths = {k: f"{base}-{k}-idx{3 if k == 'images' else 1}-ubyte"
           for k in ("images", "labels")}
  im = parse_idx(_open(paths["images"]), "images", paths["images"])
  lb = parse_idx(_open(paths["labels"]), "labels", paths["labels"])
  if len(im) != len(lb):
    raise DataError(f"{folder}: {len(im)} {split} images but {len(lb)} labels; "
                    "the files do not belong together.")
  if lb.size and lb.max() > 9:
    raise DataError(f"{paths['labels']}: label {lb.max()} outside 0..9.")
  return Dataset((im[..., None] / np.float32(255)).astype(np.float32),
                 lb.astype(np.int32))


def network_reachable(host: str, port: int, timeout: float = 3.0) -> bool:
  """Whether a TCP connection to host:port opens within `timeout` seconds."""
  try:
    socket.create_connection((host, port), timeout=timeout).close()
    return True
  except OSError:  # DNS failure, refused, unreachable, timed out
    return False


def _tfds_prepared(tfds, name: str) -> bool:
  """Whether TFDS has `name` in its local cache (so no download is needed)."""
  try:
    return bool(tfds.builder(name).is_prepared())
  except Exception:  # pylint: disable=broad-except  # unknown: let load decide
    return False


def _load_tfds(name: str, split: str) -> Dataset:
  """Loads one split through tensorflow-datasets (needs the network once)."""
  var = ENV_VARS[name]
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise DataError(f"No data folder given for {name} (data_dir=... or {var}) "
                    "and tensorflow-datasets is not installed: set "
                    f"{var} to a folder of the four IDX files, or "
                    "pip install 'advjax[tfds]'.") from e
  host, port = TFDS_HOSTS[name]
  # Without a network, TFDS retries the download for minutes before failing.
  if not _tfds_prepared(tfds, name) and not network_reachable(host, port):
    raise DataError(f"No data folder given for {name}, it is not in the "
                    f"tensorflow-datasets cache and {host} is unreachable: set "
                    f"{var} or pass data_dir= a folder of the four IDX files.")
  try:
    ds = tfds.as_numpy(tfds.load(name, split=split, batch_size=-1))
  except Exception as e:  # TFDS raises many types; all mean the same here.
    raise DataError(f"tensorflow-datasets could not load {name}/{split} ({e}). "
                    f"Set {var} to a folder of the four IDX files.") from e
  return Dataset((ds["image"] / np.float32(255)).astype(np.float32),
                 ds["label"].astype(np.int32))


def cache_dir(name: str = "mnist") -> str:
  """The user's cache folder for `name`: $XDG_CACHE_HOME (or ~/.cache)/advjax/name."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "advjax", name)


def mnist_mirrors() -> tuple[str, ...]:
  """The URL prefixes to download MNIST from: $ADVJAX_MNIST_MIRROR's, or MNIST_MIRRORS."""
  given = os.environ.get(MIRROR_VAR, "").split()
  return tuple(given) or MNIST_MIRRORS


def download_mnist(folder: str | None = None, progress: bool = True) -> str:
  """Downloads the four MNIST IDX files into `folder` (the cache) once; returns it.

  Each file missing there is fetched from the first mirror that gives a copy
  whose decompressed content has its `MNIST_SHA256` sum; a cut transfer
  resumes on the next call. Raises download.DownloadError (one line) when no
  mirror gives a verified copy of some file.
  """
  folder = folder or cache_dir()
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, ".lock"), "w", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # one downloader per folder at a time
    for stem, sha256 in MNIST_SHA256.items():
      dest = os.path.join(folder, stem + ".gz")
      if not os.path.exists(dest):
        urls = [m.rstrip("/") + "/" + stem + ".gz" for m in mnist_mirrors()]
        download.fetch(urls, dest, sha256, progress=progress)
  return folder


def _tfds_installed() -> bool:
  """Whether tensorflow-datasets can be imported."""
  with contextlib.suppress(ImportError):
    import tensorflow_datasets  # pylint: disable=import-outside-toplevel,unused-import
    return True
  return False


def _load_mnist_cached(split: str) -> Dataset:
  """MNIST from the cache folder, downloading it first if need be (or TFDS)."""
  if os.environ.get(MIRROR_VAR, "").strip() == "tfds":
    return _load_tfds("mnist", split)
  try:
    return _load_idx(download_mnist(), split)
  except download.DownloadError as e:
    if not e.corrupt and _tfds_installed():
      return _load_tfds("mnist", split)  # no mirror reachable: TFDS's own
    raise DataError(f"MNIST could not be downloaded into {cache_dir()}: {e}. "
                    f"Run again, set {MIRROR_VAR} to another mirror's URL prefix, "
                    f"or set {ENV_VAR} to a folder of the four IDX files.") from e


def load(name: str = "mnist", split: str = "train",
         data_dir: str | None = None) -> Dataset:
  """Loads MNIST or Fashion-MNIST (the paper's §4.2 data).

  Args:
    name: 'mnist' or 'fashion_mnist'.
    split: 'train' or 'test'.
    data_dir: folder of the four IDX files of `name`; defaults to the dataset's
      environment variable (ENV_VARS), then DEFAULT_DIRS, then (MNIST) the
      cache folder, downloaded into once, then tensorflow-datasets (see the
      module's docstring).

  Returns:
    Dataset(x float32 (N, 28, 28, 1) in [0, 1], y int32 (N,)); N from the headers.
  """
  if name not in DATASETS:
    raise ValueError(f"dataset {name!r}: expected one of {DATASETS}.")
  if split not in SPLITS:
    raise ValueError(f"split {split!r}: expected one of {SPLITS}.")
  default = DEFAULT_DIRS.get(name)
  folder = data_dir or os.environ.get(ENV_VARS[name]) or (
      default if default and os.path.isdir(default) else None)
  if folder:
    if not os.path.isdir(folder):
      raise DataError(f"data folder {folder!r} does not exist.")
    return _load_idx(folder, split)
  if name == "mnist":
    return _load_mnist_cached(split)
  return _load_tfds(name, split)


def halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic disjoint halves P1, P2 of range(n) (Tables 3-4)."""
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def subset(ds: Dataset, idx: np.ndarray) -> Dataset:
  """Rows `idx` of a dataset."""
  return Dataset(ds.x[idx], ds.y[idx])


def write_idx(path: str, arr: np.ndarray) -> None:
  """Writes uint8 `arr` (N,) or (N, R, C) as a gzipped IDX file (tests, tools)."""
  magic = _MAGIC["images" if arr.ndim == 3 else "labels"]
  head = struct.pack(">I" + "I" * arr.ndim, magic, *arr.shape)
  with gzip.open(path, "wb") as f:
    f.write(head + np.ascontiguousarray(arr, np.uint8).tobytes())
