"""Shared fixtures: tiny synthetic IDX folders and the MNIST folder when present."""

import os

import numpy as np
import pytest

from advjax import data


def write_idx_folder(folder, splits: dict) -> None:
  """The four IDX files of `splits` {'train'|'t10k': (uint8 images, labels)}."""
  for prefix, (x, y) in splits.items():
    data.write_idx(str(folder / f"{prefix}-images-idx3-ubyte.gz"), x)
    data.write_idx(str(folder / f"{prefix}-labels-idx1-ubyte.gz"), y)


@pytest.fixture(scope="session", autouse=True)
def no_download():
  """No test reaches the network: MNIST's mirror is a closed local port (the
  download tests serve their own, tests/test_download.py); children inherit it."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(data.MIRROR_VAR, "http://127.0.0.1:9/")
    yield


@pytest.fixture
def idx_dir(tmp_path):
  """A folder with the four IDX files of a tiny synthetic MNIST (20 / 10 images)."""
  rng = np.random.default_rng(0)
  write_idx_folder(tmp_path, {
      prefix: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
               rng.integers(0, 10, n, dtype=np.uint8))
      for prefix, n in (("train", 20), ("t10k", 10))})
  return tmp_path


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory):
  """A learnable synthetic MNIST IDX folder (600 training / 200 test images).

  Each class is a fixed random pattern, mostly dark like a digit, plus noise,
  so the experiments' quick models learn it in their few epochs and every
  table has correctly classified images to attack (the flax examples' mock
  data, as files `advjax.data` reads).
  """
  rng = np.random.default_rng(0)
  folder = tmp_path_factory.mktemp("fake_mnist")
  prototypes = rng.random((10, 28, 28)) ** 3
  splits = {}
  for prefix, n in (("train", 600), ("t10k", 200)):
    y = rng.permutation(np.arange(n) % 10)
    x = np.clip(prototypes[y] + 0.25 * rng.normal(size=(n, 28, 28)), 0, 1)
    splits[prefix] = ((255 * x).round().astype(np.uint8), y.astype(np.uint8))
  write_idx_folder(folder, splits)
  return folder


@pytest.fixture(scope="session")
def mnist_dir():
  """The real MNIST IDX folder from $ADVJAX_DATA_DIR, or skip."""
  d = os.environ.get("ADVJAX_DATA_DIR")
  if not d or not os.path.exists(os.path.join(d, "t10k-labels-idx1-ubyte.gz")):
    pytest.skip("set ADVJAX_DATA_DIR to an MNIST IDX folder")
  return d
