"""Lipschitz bounds of whole networks (Szegedy et al. §4.3, Table 5).

The network φ = φ_K ∘ … ∘ φ_1 is Lipschitz with constant at most ∏ L_k. This
module gives L_k for every layer kind in `advjax.models`:

  * linear layers (dense, conv): the operator norm ‖W‖ from
    `advjax.norms.spectral` (a lower estimate and a certified upper bound);
  * non-linear layers, analytically: ReLU 1, sigmoid 1/4, max-pooling
    sqrt(max number of windows holding one pixel) = ⌈k_h/s_h⌉^½·⌈k_w/s_w⌉^½
    in the interior (so ⌈k/s⌉ for square windows, and *not* 1 when windows
    overlap), contrast normalisation ε^(−γ), local response normalisation
    (derived below).

`layer_bounds` walks a `Model` and returns the Table 5 rows and the product;
`empirical_lower_bound` measures how loose that product is on data. The
operator norms themselves live in `advjax.norms.spectral`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advjax.norms.conv_geometry import as_pair, conv_padding
from advjax.norms.spectral import conv_norm, dense_norm
from advjax.norms.upper_bounds import certified


# ----------------------------------------------------------------------------
# Non-linear layers.

# The models' activations (advjax.models.KINDS): |σ'| ≤ 1 and ≤ 1/4.
ACTIVATION_BOUNDS = {"relu": 1.0, "sigmoid": 0.25, "minmax": 1.0}  # minmax: a sort


def _window_counts(n: int, k: int, s: int, pads: tuple[int, int]) -> int:
  """Most windows (size k, stride s, padded) that hold one real pixel, on one axis."""
  m = (n + pads[0] + pads[1] - k) // s + 1
  c = np.zeros(n + pads[0] + pads[1], int)
  for i in range(m):
    c[s * i:s * i + k] += 1
  return int(c[pads[0]:pads[0] + n].max())


def maxpool_bound(window: Sequence[int] | int, stride: Sequence[int] | int,
                  input_hw: Sequence[int] | None = None,
                  padding: Any = "VALID") -> float:
  """ℓ2 Lipschitz constant of max-pooling (per channel): sqrt(c_max), exact (§4.3).

  |max_W x − max_W x'| ≤ max_{i∈W} |x_i − x'_i|, so ‖Δy‖² ≤ Σ_windows Σ_{i∈W} Δx_i²
  = Σ_i c_i Δx_i² ≤ c_max ‖Δx‖², c_i the number of windows holding pixel i;
  moving only the pixel that is the maximum of all its c_max windows attains
  it. In the interior c_max = ⌈k_h/s_h⌉·⌈k_w/s_w⌉, so square windows give
  ⌈k/s⌉ (2 for AlexNet's 3×3 stride-2 pools), non-overlapping ones 1, and a
  1-D pool sqrt(⌈k/s⌉). With `input_hw` the count is exact at that size.
  """
  k, s = as_pair(window, "window"), as_pair(stride, "stride")
  if input_hw is None:
    c = math.ceil(k[0] / s[0]) * math.ceil(k[1] / s[1])
  else:
    pads = conv_padding(padding, input_hw, k, s, (1, 1))
    c = math.prod(_window_counts(int(n), ki, si, p)
                  for n, ki, si, p in zip(input_hw, k, s, pads))
  return math.sqrt(c)


def contrast_norm_bound(eps: float, gamma: float) -> float:
  """Contrast normalisation x ↦ x/(ε + ‖x‖²)^γ: L = ε^(−γ) for 0 ≤ γ ≤ 1 (§4.3).

  Its Jacobian (ε+r²)^(−γ)·(I − 2γ x xᵀ/(ε+r²)) has eigenvalues (ε+r²)^(−γ)
  and (ε+r²)^(−γ)(1 − 2γr²/(ε+r²)), both ≤ ε^(−γ) in size when γ ≤ 1;
  equality at x = 0. (The paper states γ ∈ [0.5, 1]; [0, 1] suffices.)
  """
  if eps <= 0 or not 0 <= gamma <= 1:
    raise ValueError(f"need ε > 0 and 0 ≤ γ ≤ 1 for the ε^(−γ) bound, got "
                     f"ε={eps}, γ={gamma}.")
  return float(eps) ** -float(gamma)


def lrn_bound(size: float, alpha: float, beta: float, k: float) -> float:
  """LRN b_c = a_c (k + α/n Σ_{N(c)} a²)^(−β): its L for any input (§4.3).

  With h(S) = (k + αS/n)^(−β) and S_c = Σ_{N(c)} a_j², (Jδ)_c = h_c δ_c +
  2 a_c h'(S_c) ⟨a, δ⟩_{N(c)}. |a_c|·|⟨a,δ⟩_{N(c)}| ≤ S_c ‖δ_{N(c)}‖ and
  2 S |h'(S)| = 2β t (k+t)^(−β−1) ≤ q := 2 k^(−β) (β/(1+β))^(β+1) (max at
  t = αS/n = k/β); each channel lies in ≤ n windows, so
  L ≤ k^(−β) + q·sqrt(n) = k^(−β) (1 + 2 sqrt(n) (β/(1+β))^(β+1)).
  AlexNet (n=5, α=1e-4, β=0.75, k=2): 1.198. L ≥ k^(−β) (the Jacobian at 0).
  """
  if k <= 0 or beta <= 0 or alpha < 0 or size < 1:
    raise ValueError(f"LRN needs k > 0, β > 0, α ≥ 0, size ≥ 1; got "
                     f"k={k}, β={beta}, α={alpha}, size={size}.")
  q = 2 * (beta / (1 + beta)) ** (beta + 1) if alpha > 0 else 0.0
  return float(k) ** -beta * (1 + q * math.sqrt(int(size)))


# ----------------------------------------------------------------------------
# Whole networks (Table 5).

class LayerBound(NamedTuple):
  """One Table 5 row.

  Attributes:
    name, kind: the layer's.
    size: 'C×kh×kw×D' (conv), 'in×out' (dense), 'kh×kw' (pool), '' otherwise.
    stride: conv/pool stride, None otherwise.
    input_shape: the layer's input shape (no batch axis).
    bound: certified upper bound L_k (for analytic rows the exact constant or
      its proven bound; for linear rows without a certificate the estimate).
    estimate: lower estimate of L_k (= bound for analytic rows).
    certified: whether `bound` is proven (False: an uncertified estimate).
    iterations, seconds, method: cost of the row and how `bound` was found.
  """
  name: str
  kind: str
  size: str
  stride: int | None
  input_shape: tuple[int, ...]
  bound: float
  estimate: float
  certified: bool
  iterations: int
  seconds: float
  method: str


class NetworkBounds(NamedTuple):
  """Table 5 of a model: rows, ∏ bounds (upper) and ∏ estimates."""
  rows: tuple[LayerBound, ...]
  product: float
  product_estimate: float
  certified: bool


def _linear_row(L, params, shape, options) -> LayerBound:
  """Row of a dense or conv layer; errors (NaN/inf weights, ...) name it."""
  W = np.asarray(params[L.name]["kernel"])
  try:
    if L.kind == "dense":
      r, size, stride = dense_norm(W, **options), f"{W.shape[0]}×{W.shape[1]}", None
    else:
      r = conv_norm(W, shape, L.stride, L.padding, **options)
      size, stride = "×".join(str(v) for v in (W.shape[2],) + W.shape[:2] + W.shape[3:]), L.stride
  except ValueError as e:  # same type, so callers can still catch NonFiniteError
    raise type(e)(f"layer {L.name!r} ({L.kind}): {e}") from e
  up = r.upper if r.upper is not None else r.estimate
  return LayerBound(L.name, L.kind, size, stride, shape, up, r.estimate,
                    r.upper is not None, r.iterations, r.seconds,
                    f"{r.method}/{r.upper_method}")


def _analytic_row(L, shape) -> LayerBound:
  """Row of a parameter-free layer."""
  size, stride, how = "", None, "analytic"
  if L.kind in ACTIVATION_BOUNDS:
    b = ACTIVATION_BOUNDS[L.kind]
  elif L.kind == "maxpool":
    b = maxpool_bound(L.kernel, L.stride, shape[:2], L.padding)
    size, stride, how = f"{L.kernel[0]}×{L.kernel[1]}", L.stride, "window count"
  elif L.kind == "lrn":
    b, size = lrn_bound(*L.lrn), f"n={int(L.lrn[0])}"
  elif L.kind in ("flatten", "dropout"):  # identity at evaluation
    b = 1.0
  else:
    raise ValueError(f"layer {L.name!r}: no Lipschitz bound for kind {L.kind!r}.")
  return LayerBound(L.name, L.kind, size, stride, shape, b, b, True, 0, 0.0, how)


def layer_bounds(model, params, input_shape: Sequence[int] | None = None,
                 progress: bool = False, **options) -> NetworkBounds:
  """Per-layer Lipschitz bounds and their product for an advjax `Model` (§4.3).

  Args:
    model: an `advjax.models.Model`.
    params: its parameters.
    input_shape: input shape without batch axis (default `model.input_shape`);
      conv norms depend on it.
    progress: show a tqdm bar over layers.
    **options: passed to `conv_norm` / `dense_norm` (tol, dtype, certify, ...).

  Returns:
    NetworkBounds: `rows` in layer order; `product` = ∏ bound is a Lipschitz
    constant of the logits w.r.t. the input in ℓ2 (when `certified`).
  """
  shape = tuple(input_shape or model.input_shape)
  x = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
  rows = []
  layers = model.layers
  if progress:
    from tqdm.auto import tqdm
    layers = tqdm(layers, desc=f"{model.name} layers")
  for L in layers:
    row = (_linear_row(L, params, shape, options) if L.kind in ("dense", "conv")
           else _analytic_row(L, shape))
    rows.append(row)
    shape = jax.eval_shape(lambda v, n=L.name: model.features(params, v, n), x).shape[1:]
  # Every row is finite, but a deep product can still overflow: never inf.
  return NetworkBounds(tuple(rows),
                       certified(math.prod(r.bound for r in rows), "layer_bounds product"),
                       math.prod(r.estimate for r in rows),
                       all(r.certified for r in rows))


# ----------------------------------------------------------------------------
# Empirical lower bounds.

class EmpiricalBound(NamedTuple):
  """Lower bounds on the network's Lipschitz constant from data.

  Attributes:
    jacobian_norms: (B,) ‖∂f/∂x(x_i)‖₂ (each a lower bound on L).
    pair_ratios: (B,) ‖f(x_adv) − f(x)‖/‖x_adv − x‖, or None.
    lower: the largest of all of them.
  """
  jacobian_norms: np.ndarray
  pair_ratios: np.ndarray | None
  lower: float


def jacobian_norms(logits_fn: Callable, x: Any, iters: int = 30,
                   batch_size: int = 64, params: Any = None) -> np.ndarray:
  """Per-example ‖∂f/∂x‖₂ by power iteration (§4.3's bound, from below).

  Iterates u ← J Jᵀ u in the output space (jvp and its transpose at x_i; by
  `optax.power_iteration`, inside the jit and vmap over examples) and
  returns ‖Jᵀ u‖ for the unit u reached: a lower bound on ‖J‖ at any `iters`.
  `logits_fn` maps a batch (B, ...) to (B, K); with `params` it is called as
  logits_fn(params, batch) and params is a jit argument (not a constant).
  """
  call = (lambda p, v: logits_fn(v)) if params is None else logits_fn

  def one(xi, p):
    single = lambda v: call(p, v[None])[0]
    y, jvp = jax.linearize(single, xi)
    jt = jax.linear_transpose(jvp, xi)
    u0 = jnp.ones_like(y) + jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size
    # tolerance 0: exactly `iters` products, the same cost for every example.
    u = optax.power_iteration(lambda u: jvp(jt(u)[0]), v0=u0, num_iters=iters,
                              error_tolerance=0.0)[1]
    return jnp.linalg.norm(jt(u)[0])

  run = jax.jit(jax.vmap(one, in_axes=(0, None)))
  x, p = np.asarray(x), () if params is None else params
  return np.concatenate([np.asarray(run(jnp.asarray(x[i:i + batch_size]), p))
                         for i in range(0, len(x), batch_size)])


def empirical_lower_bound(logits_fn: Callable, x: Any, x_adv: Any = None,
                          iters: int = 30, batch_size: int = 64,
                          params: Any = None) -> EmpiricalBound:
  """How big the Lipschitz constant is at least, measured on data (§4.3).

  Args:
    logits_fn: batch (B, ...) → logits (B, K), e.g. `partial(model.apply,
      params)`; or, when `params` is given, (params, batch) → logits, e.g.
      `model.apply` (better for big models: weights stay jit arguments).
    x: data points (B, ...).
    x_adv: optional perturbed points paired with x (e.g. adversarial examples);
      pairs with x_adv = x are ignored.
    iters: power iterations per Jacobian.
    batch_size: examples per vmapped batch.
    params: see `logits_fn`.

  Returns:
    EmpiricalBound; compare `lower` with `layer_bounds(...).product`.
  """
  jn = jacobian_norms(logits_fn, x, iters, batch_size, params)
  ratios = None
  if x_adv is not None:
    x, x_adv = np.asarray(x), np.asarray(x_adv)
    if x.shape != x_adv.shape:
      raise ValueError(f"x_adv has shape {x_adv.shape}, x has {x.shape}; they "
                       "must be paired example by example.")
    p = () if params is None else params
    f = jax.jit((lambda p, v: logits_fn(v)) if params is None else logits_fn)
    df = np.concatenate([np.asarray(f(p, x_adv[i:i + batch_size]) - f(p, x[i:i + batch_size]))
                         for i in range(0, len(x), batch_size)])
    dx = np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1)
    num = np.linalg.norm(df.reshape(len(x), -1), axis=1)
    ratios = np.where(dx > 0, num / np.where(dx > 0, dx, 1), np.nan)
  vals = [jn.max()] + ([np.nanmax(ratios)] if ratios is not None and
                       np.isfinite(ratios).any() else [])
  return EmpiricalBound(jn, ratios, float(max(vals)))
