"""Shared fixtures: tiny synthetic IDX folders and the MNIST folder when present."""

import os

import numpy as np
import pytest

from advjax import data


@pytest.fixture
def idx_dir(tmp_path):
  """A folder with the four IDX files of a tiny synthetic MNIST (20 / 10 images)."""
  rng = np.random.default_rng(0)
  for prefix, n in (("train", 20), ("t10k", 10)):
    data.write_idx(str(tmp_path / f"{prefix}-images-idx3-ubyte.gz"),
                   rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    data.write_idx(str(tmp_path / f"{prefix}-labels-idx1-ubyte.gz"),
                   rng.integers(0, 10, n, dtype=np.uint8))
  return tmp_path


@pytest.fixture(scope="session")
def mnist_dir():
  """The real MNIST IDX folder from $ADVJAX_DATA_DIR, or skip."""
  d = os.environ.get("ADVJAX_DATA_DIR")
  if not d or not os.path.exists(os.path.join(d, "t10k-labels-idx1-ubyte.gz")):
    pytest.skip("set ADVJAX_DATA_DIR to an MNIST IDX folder")
  return d
