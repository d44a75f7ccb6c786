"""Convolution geometry shared by the operator norms (§4.3, Table 5): kernel
dilation, padding, the zero-padded embedding, and the conv as a linear map."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST  # exact float32 products for the norms


def axis_embedding(n: int, pads: tuple[int, int], k: int, s: int) -> int:
  """Smallest N (multiple of s) s.t. the zero-padded strided conv on n embeds."""
  m = (n + pads[0] + pads[1] - k) // s + 1
  N = max(n + pads[0], n + pads[1], s * m, k)
  return -(-N // s) * s


def dilate(kernel: np.ndarray, dilation: tuple[int, int]) -> np.ndarray:
  """Kernel (kh, kw, C, D) with dilation holes filled by zeros."""
  kh, kw = kernel.shape[:2]
  out = np.zeros(((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1)
                 + kernel.shape[2:], kernel.dtype)
  out[::dilation[0], ::dilation[1]] = kernel
  return out


# ----------------------------------------------------------------------------
# Layers: conv and dense.

def as_pair(x, name: str) -> tuple[int, int]:
  """An int or a pair of positive ints, as a pair (`name` for the error)."""
  t = (x, x) if isinstance(x, (int, np.integer)) else tuple(x)
  if len(t) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in t):
    raise ValueError(f"{name} must be a positive int or a pair of them, got {x!r}.")
  return int(t[0]), int(t[1])


def conv_padding(padding: Any, input_hw: Sequence[int], kernel_hw: Sequence[int],
                 stride: tuple[int, int], dilation: tuple[int, int]):
  """Explicit ((top, bottom), (left, right)) pads, like `flax.linen.Conv`."""
  keff = [(k - 1) * d + 1 for k, d in zip(kernel_hw, dilation)]
  if isinstance(padding, str):
    p = padding.upper()
    if p in ("SAME", "VALID"):
      return tuple(jax.lax.padtype_to_pads(tuple(input_hw), keff, stride, p))
    if p == "CIRCULAR":
      return tuple(((k - 1) // 2, k // 2) for k in keff)
    raise ValueError(f"padding {padding!r}: use 'SAME', 'VALID', 'CIRCULAR', an "
                     "int or ((top, bottom), (left, right)).")
  if isinstance(padding, (int, np.integer)):
    return ((int(padding),) * 2,) * 2
  pads = tuple(tuple(int(v) for v in p) for p in padding)
  if len(pads) != 2 or any(len(p) != 2 or min(p) < 0 for p in pads):
    raise ValueError(f"padding {padding!r} must be two (low, high) pairs ≥ 0.")
  return pads


def conv_fn(kernel_hwio: Any, stride=1, padding: Any = "SAME", dilation=1,
            input_hw: Sequence[int] | None = None) -> Callable:
  """The conv's linear map W (no bias) on one HWC image, precision HIGHEST (§4.3)."""
  K = np.asarray(kernel_hwio)  # cast inside f, so float64 callers keep float64
  s, d = as_pair(stride, "stride"), as_pair(dilation, "dilation")
  pads = conv_padding(padding, input_hw, K.shape[:2], s, d)
  circ = isinstance(padding, str) and padding.upper() == "CIRCULAR"

  def f(x, kernel=K):
    if circ:
      x, p = jnp.pad(x, pads + ((0, 0),), mode="wrap"), ((0, 0), (0, 0))
    else:
      p = pads
    return jax.lax.conv_general_dilated(
        x[None], jnp.asarray(kernel, x.dtype), s, p, rhs_dilation=d,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HIGHEST)[0]
  return f
