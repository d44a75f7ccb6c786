"""Spectral analysis of a network's layers (Szegedy et al. §4.3, Table 5).

The network φ = φ_K ∘ … ∘ φ_1 is Lipschitz with constant at most ∏ L_k. This
module gives, for every layer kind in `advjax.models`:

  * linear layers (dense, conv with any stride/padding/dilation): the operator
    norm ‖W‖ by Lanczos (or power) iteration on v ↦ Wᵀ W v, with Wᵀ from
    `jax.linear_transpose` of the layer's linear map, never a matrix. The
    iteration gives an *estimate* that is a lower bound (a Rayleigh quotient).
    A separate *certified upper bound* comes from
      - Gram iteration (Delattre et al. 2023) on the explicit matrix, for dense
        layers and for small operators of any kind (float64, numpy);
      - the polyphase FFT bound for convolutions: a zero-padded conv on n
        pixels is a restriction of a circular conv on N ≥ n + pad pixels,
        whose norm is max_ξ ‖A(ξ)‖ / sqrt(Δ_h Δ_w), A(ξ) stacking the Δ_h·Δ_w
        aliased frequencies of the kernel's DFT. (The paper prints the factor
        as Δ⁻²; 1/Δ is what matches a dense SVD, see BUILD_NOTES.md §5.)
  * non-linear layers: ReLU 1, sigmoid 1/4, max-pooling sqrt(max number of
    windows holding one pixel) = ⌈k_h/s_h⌉^½·⌈k_w/s_w⌉^½ in the interior (so
    ⌈k/s⌉ for square windows, and *not* 1 when windows overlap), contrast
    normalisation ε^(−γ), local response normalisation (derived below), affine
    normalisation max|scale|.

`layer_bounds` walks a `Model` and returns the Table 5 rows and the product;
`empirical_lower_bound` measures how loose that product is on data.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST


class NormResult(NamedTuple):
  """An operator norm: `estimate` ≤ ‖W‖ ≤ `upper` (up to rounding).

  Attributes:
    estimate: sqrt of the last Rayleigh quotient of WᵀW: a lower bound.
    upper: a certified upper bound, or None where no certificate was computed.
    iterations: number of WᵀW products the iteration used.
    residual: ‖WᵀWv − λv‖ / λ at the returned vector v.
    method: 'lanczos' or 'power' (how `estimate` was found).
    upper_method: how `upper` was found ('gram', 'fft-N=(..)', None).
    seconds: wall time of the whole call.
  """
  estimate: float
  upper: float | None
  iterations: int
  residual: float
  method: str
  upper_method: str | None
  seconds: float


# ----------------------------------------------------------------------------
# Iterations on a symmetric positive semi-definite operator M = WᵀW.

def _unit(v):
  return v / jnp.linalg.norm(v)


def _rayleigh(mv, y):
  """(λ, relative residual) of a unit vector y (host, float64)."""
  w = mv(y)
  lam = float(y @ w)
  return lam, float(np.linalg.norm(w - lam * y) / max(lam, 1e-300))


def _lanczos_cycle(mv, v, m: int, rng):
  """m Lanczos steps from unit v, fully reorthogonalised; the top Ritz vector.

  Host-side float64 bookkeeping around the jitted operator `mv`: a cycle
  costs m operator calls and O(m²n) flops, and no compile beyond `mv`'s.
  """
  V = np.zeros((m, v.size))
  al, be = np.zeros(m), np.zeros(m)
  for i in range(m):
    V[i] = v
    w = mv(v)
    al[i] = v @ w
    r = w - V[:i + 1].T @ (V[:i + 1] @ w)
    r -= V[:i + 1].T @ (V[:i + 1] @ r)  # twice is enough (Parlett)
    be[i] = np.linalg.norm(r)
    if be[i] <= 1e-10 * np.linalg.norm(w):
      # Invariant subspace found: go on from a fresh random direction with
      # β = 0, so that T stays the projection VᵀMV.
      be[i] = 0.0
      r = rng.standard_normal(v.size)
      r -= V[:i + 1].T @ (V[:i + 1] @ r)
      r -= V[:i + 1].T @ (V[:i + 1] @ r)
    v = r / np.linalg.norm(r)
  T = np.diag(al) + np.diag(be[:-1], 1) + np.diag(be[:-1], -1)
  y = V.T @ np.linalg.eigh(T)[1][:, -1]
  return y / np.linalg.norm(y)


def _lanczos(mv, v0, tol, max_iters, m, rng):
  """Explicitly restarted Lanczos: cycles of m steps, restart at the top Ritz vector.

  Returns (y, λ, residual, iterations); λ = yᵀMy is recomputed at the unit
  Ritz vector y, so it is a Rayleigh quotient (≤ λ_max) whatever the
  orthogonality of the basis.
  """
  m = int(min(m, v0.size))
  y = v0
  lam, res = _rayleigh(mv, y)
  it = 1
  while res > tol and it < max_iters:
    y = _lanczos_cycle(mv, y, m, rng)
    lam_new, res_new = _rayleigh(mv, y)
    it += m + 1
    if lam_new >= lam or res_new < res:  # never return a worse Ritz pair
      lam, res = lam_new, res_new
    if m == v0.size:  # the Krylov space is the whole space: exact
      break
  return y, lam, res, it


def _power(mv, v0, tol, max_iters):
  """Power iteration v ← Mv/‖Mv‖ with the residual stopping rule."""

  def cond(s):
    _, _, res, it = s
    return (res > tol) & (it < max_iters)

  def body(s):
    v, _, _, it = s
    w = mv(v)
    lam = jnp.vdot(v, w)
    res = jnp.linalg.norm(w - lam * v) / jnp.maximum(lam, jnp.finfo(v.dtype).tiny)
    # λ and res belong to v; the next iterate is only used if res is too big.
    return jnp.where(res > tol, _unit(w), v), lam, res, it + 1

  one = jnp.ones((), v0.dtype)
  return jax.lax.while_loop(cond, body, (v0, one, jnp.inf * one, 0))


# ----------------------------------------------------------------------------
# Certificates (float64, numpy).

def gram_upper(W: Any, lower: float = 0.0, rtol: float = 1e-4,
               max_steps: int = 16) -> float:
  """Certified ‖W‖₂ ≤ bound by Gram iteration (Delattre et al. 2023), float64.

  G₀ = W, G_{t+1} = (G_t/r_t)ᵀ(G_t/r_t) with r_t = ‖G_t‖_F gives
  ‖W‖ ≤ exp(Σ_{i<t} 2^{−i} log r_i) · ‖G_t‖_F^{2^{−t}}, the Schatten-2^{t+1}
  norm, which decreases to ‖W‖. Stops once the bound is within `rtol` of a
  known `lower` bound, when it stops improving, or after `max_steps`.
  """
  G = np.asarray(W, np.float64)
  if G.ndim != 2:
    raise ValueError(f"gram_upper needs a matrix, got shape {G.shape}.")
  if G.shape[0] < G.shape[1]:
    G = G.T
  c, best = 0.0, float(np.linalg.norm(G))
  for t in range(max_steps):
    r = np.linalg.norm(G)
    if r == 0 or best <= lower * (1 + rtol):
      break
    c += 2.0 ** -t * math.log(r)
    G = G / r
    G = G.T @ G
    bound = math.exp(c + 2.0 ** -(t + 1) * math.log(np.linalg.norm(G)))
    if bound >= best * (1 - 1e-12):  # rounding floor reached
      best = min(best, bound)
      break
    best = bound
  return 0.0 if np.linalg.norm(G) == 0 else best


def _axis_embedding(n: int, pads: tuple[int, int], k: int, s: int) -> int:
  """Smallest N (multiple of s) s.t. the zero-padded strided conv on n embeds."""
  m = (n + pads[0] + pads[1] - k) // s + 1
  N = max(n + pads[0], n + pads[1], s * m, k)
  return -(-N // s) * s


def _dilate(kernel: np.ndarray, dilation: tuple[int, int]) -> np.ndarray:
  """Kernel (kh, kw, C, D) with dilation holes filled by zeros."""
  kh, kw = kernel.shape[:2]
  out = np.zeros(((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1)
                 + kernel.shape[2:], kernel.dtype)
  out[::dilation[0], ::dilation[1]] = kernel
  return out


def circular_conv_norm(kernel: Any, N: tuple[int, int],
                       stride: tuple[int, int] = (1, 1)) -> float:
  """Exact norm of the strided circular conv on N_h × N_w (N divisible by stride).

  Polyphase formula (§4.3 corrected): max over the (N_h/Δ_h)·(N_w/Δ_w) output
  frequencies η of ‖A(η)‖/sqrt(Δ_h Δ_w), A(η) = [K̂(η + a·N/Δ)]_a the D × (C·Δ²)
  block of aliased kernel DFTs (unnormalised DFT). float64; one η-row at a time
  to keep memory at O(Δ_h·N_w·C·D). Exact up to rounding (eigvalsh per η).
  """
  K = np.asarray(kernel, np.float64)
  (Nh, Nw), (sh, sw) = N, stride
  if Nh % sh or Nw % sw:
    raise ValueError(f"circular size {N} must be divisible by the stride {stride}.")
  kh, kw, C, D = K.shape
  Kw = np.zeros((kh, Nw, C, D))
  np.add.at(Kw, (slice(None), np.arange(kw) % Nw), K)  # folds kw > Nw too
  Kw = np.fft.fft(Kw, axis=1)  # (kh, Nw, C, D)
  Mh, Mw = Nh // sh, Nw // sw
  best = 0.0
  # A real kernel has K̂(−ω) = conj K̂(ω), so row Mh − η holds the conjugates
  # (permuted columns) of row η: half the rows suffice.
  for eta in range(Mh // 2 + 1):
    w = eta + Mh * np.arange(sh)  # the Δ_h aliased row frequencies
    F = np.exp(-2j * np.pi * np.outer(w, np.arange(kh)) / Nh)  # (sh, kh)
    B = np.einsum("ak,kwcd->awcd", F, Kw)  # (sh, Nw, C, D)
    B = B.reshape(sh, sw, Mw, C, D).transpose(2, 0, 1, 3, 4).reshape(
        Mw, sh * sw * C, D)
    Bh = B.conj().transpose(0, 2, 1)
    G = Bh.transpose(0, 2, 1) @ B.transpose(0, 2, 1) if sh * sw * C <= D else Bh @ B
    best = max(best, float(np.linalg.eigvalsh(G)[:, -1].max()))
  return math.sqrt(max(best, 0.0) / (sh * sw))


# ----------------------------------------------------------------------------
# Public norms.

def _check_dtype(dtype) -> jnp.dtype:
  dtype = jnp.dtype(dtype)
  if dtype == jnp.float64 and not jax.config.jax_enable_x64:
    raise ValueError("dtype=float64 needs 64-bit JAX: call inside "
                     "`with jax.enable_x64(True):` (never set it globally).")
  if dtype not in (jnp.float32, jnp.float64):
    raise ValueError(f"dtype must be float32 or float64, got {dtype}.")
  return dtype


def _linear_ops(fn, input_shape, dtype, rng, args):
  """(f, fᵀ) on flat vectors, taking `args` as traced arguments (not constants,
  which XLA would constant-fold); checks that fn is linear (not affine)."""
  n = math.prod(input_shape)
  spec = jax.ShapeDtypeStruct((n,), dtype)
  f = lambda v, a: jnp.ravel(fn(v.reshape(input_shape), *a))

  def fT(y, a):
    try:
      return jax.linear_transpose(lambda v: f(v, a), spec)(y)[0]
    except Exception:  # a primitive JAX cannot transpose: use the VJP at 0.
      return jax.vjp(lambda v: f(v, a), jnp.zeros(n, dtype))[1](y)[0]

  u, w = jnp.asarray(rng.standard_normal((2, n)), dtype)
  fj = jax.jit(f)
  fu, fw, f0 = fj(u, args), fj(w, args), fj(jnp.zeros(n, dtype), args)
  scale = jnp.linalg.norm(fu) + jnp.linalg.norm(fw) + 1e-30
  if jnp.linalg.norm(f0) > 1e-6 * scale:
    raise ValueError("fn(0) ≠ 0: fn is affine (has a bias?); pass its linear part.")
  if jnp.linalg.norm(fj(2 * u - 3 * w, args) - (2 * fu - 3 * fw)) > 1e-4 * 5 * scale:
    raise ValueError("fn is not linear (f(2u − 3w) ≠ 2f(u) − 3f(w)); operator "
                     "norms need the layer's linear map, e.g. the conv without "
                     "bias or activation.")
  return f, fT


def _dense_matrix(f, n: int, dtype, args) -> np.ndarray:
  """The explicit matrix of a flat linear map, as float64 (m, n)."""
  J = jax.jit(jax.vmap(f, in_axes=(0, None)))(jnp.eye(n, dtype=dtype), args)
  return np.asarray(J, np.float64).T  # rows of J: f(e_j)


def operator_norm(fn: Callable, input_shape: Sequence[int], *,
                  dtype=jnp.float32, method: str = "lanczos",
                  tol: float | None = None, max_iters: int = 5000,
                  krylov_dim: int = 32, seed: int = 0,
                  certify: bool = True, dense_limit: int = 4096,
                  gram_rtol: float = 1e-4, args: tuple = ()) -> NormResult:
  """Spectral norm ‖W‖₂ of a linear map given as a function (§4.3).

  Iterates on v ↦ Wᵀ W v with Wᵀ from `jax.linear_transpose`, in `dtype`, at
  `precision=HIGHEST`, until the relative residual ‖WᵀWv − λv‖/λ ≤ tol.

  Args:
    fn: linear map x ↦ fn(x, *args), x of `input_shape` (no batch axis).
    input_shape: its input shape.
    dtype: float32 or float64 (float64 only inside `jax.enable_x64(True)`).
    method: 'lanczos' (restarted, full reorthogonalisation; default) or 'power'.
    tol: residual tolerance; default 1e-5 (float32) or 1e-9 (float64).
    max_iters: cap on WᵀW products.
    krylov_dim: Lanczos steps per restart cycle.
    seed: seed of the random start (numpy, so no PRNG compile).
    certify: compute a certified upper bound where one is affordable: Gram
      iteration on the explicit matrix when both dimensions ≤ `dense_limit`.
    dense_limit: largest input/output size materialised for the certificate.
    gram_rtol: Gram iteration stops within this of the estimate.
    args: arrays fn takes after x (e.g. the kernel): passed to the jitted
      code as arguments, so big weights are not compiled in as constants.

  Returns:
    NormResult; `upper` is None when the operator is too big to certify here
    (use `conv_norm` / `dense_norm`, which have structured certificates).
  """
  t0 = time.time()
  input_shape = tuple(int(d) for d in input_shape)
  dtype = _check_dtype(dtype)
  tol = (1e-5 if dtype == jnp.float32 else 1e-9) if tol is None else tol
  if method not in ("lanczos", "power"):
    raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}.")
  with jax.default_matmul_precision("highest"):
    rng = np.random.RandomState(seed)
    f, fT = _linear_ops(fn, input_shape, dtype, rng, args)
    mv = lambda v, a: fT(f(v, a), a)
    v0 = _unit(jnp.asarray(rng.standard_normal(math.prod(input_shape)), dtype))
    if method == "lanczos":
      mvj = jax.jit(mv)
      host_mv = lambda v: np.asarray(mvj(jnp.asarray(v, dtype), args), np.float64)
      _, lam, res, it = _lanczos(host_mv, np.asarray(v0, np.float64), tol,
                                 max_iters, krylov_dim, rng)
    else:
      run = jax.jit(lambda v, a: _power(lambda u: mv(u, a), v, tol, max_iters))
      _, lam, res, it = jax.device_get(run(v0, args))
    est = math.sqrt(max(float(lam), 0.0))
    upper, how = None, None
    m = math.prod(jax.eval_shape(f, v0, args).shape)
    if certify and max(v0.shape[0], m) <= dense_limit:
      upper = gram_upper(_dense_matrix(f, v0.shape[0], dtype, args), est, gram_rtol)
      how = "gram"
  return NormResult(est, upper, int(it), float(res), method, how,
                    time.time() - t0)


def _pairs(x, name: str) -> tuple[int, int]:
  """An int or a pair of positive ints."""
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
  """The conv's linear map (no bias) on one HWC image, at precision HIGHEST."""
  K = np.asarray(kernel_hwio)  # cast inside f, so float64 callers keep float64
  s, d = _pairs(stride, "stride"), _pairs(dilation, "dilation")
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


def conv_norm(kernel_hwio: Any, input_hwc: Sequence[int], stride=1,
              padding: Any = "SAME", dilation=1, *, certify: bool = True,
              **options) -> NormResult:
  """Spectral norm of a 2-D convolution (no bias) at one input size (§4.3).

  Args:
    kernel_hwio: kernel (kh, kw, C_in, C_out), flax/lax layout.
    input_hwc: input shape (H, W, C_in), no batch axis.
    stride: int or (s_h, s_w).
    padding: 'SAME', 'VALID', 'CIRCULAR' (as `flax.linen.Conv`), an int, or
      ((top, bottom), (left, right)).
    dilation: kernel dilation, int or pair.
    certify: also compute the certified upper bound: the polyphase FFT bound
      (circular conv at the smallest embedding size N; exact for 'CIRCULAR'
      when the stride divides H and W), and Gram iteration on the explicit
      matrix for small layers (≤ `dense_limit` inputs and outputs); the
      smaller is returned.
    **options: passed to `operator_norm` (dtype, method, tol, ...).

  Returns:
    NormResult.
  """
  t0 = time.time()
  K = np.asarray(kernel_hwio)
  if K.ndim != 4:
    raise ValueError(f"kernel must be HWIO (kh, kw, C_in, C_out), got shape {K.shape}.")
  if len(input_hwc) != 3 or int(input_hwc[2]) != K.shape[2]:
    raise ValueError(f"input_hwc must be (H, W, C_in) with C_in = {K.shape[2]} "
                     f"(the kernel's third axis), got {tuple(input_hwc)}.")
  hw = tuple(int(v) for v in input_hwc[:2])
  s, d = _pairs(stride, "stride"), _pairs(dilation, "dilation")
  pads = conv_padding(padding, hw, K.shape[:2], s, d)
  keff = [(k - 1) * di + 1 for k, di in zip(K.shape[:2], d)]
  circ = isinstance(padding, str) and padding.upper() == "CIRCULAR"
  for n, p, k, si in zip(hw, pads, keff, s):
    if n + p[0] + p[1] < k or (circ and k > n):
      raise ValueError(f"input {hw} with padding {pads} is smaller than the "
                       f"(dilated) kernel {keff}: the conv has no output.")
  r = operator_norm(conv_fn(K, s, padding, d, hw), tuple(input_hwc),
                    certify=certify, args=(jnp.asarray(K),), **options)
  upper, how = r.upper, r.upper_method
  if certify:
    if circ:
      N = hw if hw[0] % s[0] == 0 and hw[1] % s[1] == 0 else None
    else:
      N = tuple(_axis_embedding(n, p, k, si)
                for n, p, k, si in zip(hw, pads, keff, s))
    if N is not None:
      b = circular_conv_norm(_dilate(K, d), N, s)
      if upper is None or b < upper:
        upper, how = b, f"fft-N={N[0]}x{N[1]}"
  return r._replace(upper=upper, upper_method=how, seconds=time.time() - t0)


def dense_norm(W: Any, *, certify: bool = True, gram_rtol: float = 1e-4,
               **options) -> NormResult:
  """Spectral norm of a dense layer's kernel W (in, out); bias ignored (§4.3).

  The estimate iterates on the smaller side; the certificate is Gram iteration
  on W in float64 (for a matrix it converges to the exact norm).
  """
  t0 = time.time()
  W = np.asarray(W)
  if W.ndim != 2:
    raise ValueError(f"W must be a matrix (in, out), got shape {W.shape}.")
  if W.shape[0] <= W.shape[1]:
    fn, shape = (lambda x, w: jnp.dot(x, w.astype(x.dtype), precision=HIGHEST)), W.shape[:1]
  else:
    fn, shape = (lambda y, w: jnp.dot(w.astype(y.dtype), y, precision=HIGHEST)), W.shape[1:]
  r = operator_norm(fn, shape, certify=False, args=(jnp.asarray(W),), **options)
  upper, how = None, None
  if certify:
    upper, how = gram_upper(W, r.estimate, gram_rtol), "gram"
  return r._replace(upper=upper, upper_method=how, seconds=time.time() - t0)


# ----------------------------------------------------------------------------
# Non-linear layers.

ACTIVATION_BOUNDS = {"relu": 1.0, "sigmoid": 0.25, "tanh": 1.0}


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
  """ℓ2 Lipschitz constant of max-pooling (per channel): sqrt(c_max), exact.

  |max_W x − max_W x'| ≤ max_{i∈W} |x_i − x'_i|, so ‖Δy‖² ≤ Σ_windows Σ_{i∈W} Δx_i²
  = Σ_i c_i Δx_i² ≤ c_max ‖Δx‖², c_i the number of windows holding pixel i;
  moving only the pixel that is the maximum of all its c_max windows attains
  it. In the interior c_max = ⌈k_h/s_h⌉·⌈k_w/s_w⌉, so square windows give
  ⌈k/s⌉ (2 for AlexNet's 3×3 stride-2 pools), non-overlapping ones 1, and a
  1-D pool sqrt(⌈k/s⌉). With `input_hw` the count is exact at that size.
  """
  k, s = _pairs(window, "window"), _pairs(stride, "stride")
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
  """Local response normalisation b_c = a_c (k + α/n Σ_{N(c)} a²)^(−β), any input.

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


def affine_bound(scale: Any) -> float:
  """Affine normalisation x ↦ a ⊙ x + b (e.g. batch norm at test time): max|a|."""
  return float(np.max(np.abs(np.asarray(scale))))


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
  """Row of a dense or conv layer."""
  W = np.asarray(params[L.name]["kernel"])
  if L.kind == "dense":
    r, size, stride = dense_norm(W, **options), f"{W.shape[0]}×{W.shape[1]}", None
  else:
    r = conv_norm(W, shape, L.stride, L.padding, **options)
    size, stride = "×".join(str(v) for v in (W.shape[2],) + W.shape[:2] + W.shape[3:]), L.stride
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
  return NetworkBounds(tuple(rows), math.prod(r.bound for r in rows),
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
  """Per-example spectral norm of the input-output Jacobian, by power iteration.

  Iterates u ← J Jᵀ u in the output space (jvp and its transpose at x_i) and
  returns ‖Jᵀ u‖ for the unit u reached: a lower bound on ‖J‖ at any `iters`.
  `logits_fn` maps a batch (B, ...) to (B, K); with `params` it is called as
  logits_fn(params, batch) and params is a jit argument (not a constant).
  """
  call = (lambda p, v: logits_fn(v)) if params is None else logits_fn

  def one(xi, p):
    single = lambda v: call(p, v[None])[0]
    y, jvp = jax.linearize(single, xi)
    jt = jax.linear_transpose(jvp, xi)
    u0 = _unit(jnp.ones_like(y) + jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)
    u = jax.lax.fori_loop(0, iters, lambda _, u: _unit(jvp(jt(u)[0])), u0)
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
