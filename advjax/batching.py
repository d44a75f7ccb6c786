"""The one padding helper: a fixed batch shape, so that a jitted step compiles once."""

from __future__ import annotations

import numpy as np


def pad(a: np.ndarray, n: int) -> np.ndarray:
  """`a` with its leading axis padded to n rows by repeating the last row (the
  padded rows' results are dropped by the caller)."""
  a = np.asarray(a)
  return a if len(a) == n else np.concatenate([a, np.repeat(a[-1:], n - len(a), 0)])
