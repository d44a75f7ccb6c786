"""Operator norms of linear layers and their certificates (Szegedy et al. §4.3).

A linear layer W (dense, or conv with any stride/padding/dilation) is given as
a function; Wᵀ comes from `jax.linear_transpose`, so no matrix is formed. Two
numbers bracket ‖W‖₂:

  * the *estimate*, a lower bound: scipy's ARPACK Lanczos
    (`scipy.sparse.linalg.eigsh`) on a `LinearOperator` over the jitted
    v ↦ WᵀWv (or WWᵀ, the smaller side), or, in jit, `optax.power_iteration`;
    the Rayleigh quotient is recomputed at the returned unit vector, so the
    estimate is ‖Wy‖ for a unit y, never above ‖W‖ (up to rounding);
  * the *certified upper bound*, from `advjax.norms.upper_bounds` (no library has
    these): for dense layers a Cholesky test of μI − WᵀW just above the
    estimate (Gram iteration as the fallback, and for small operators of any
    kind); for convolutions the polyphase FFT bound: a zero-padded conv on n
    pixels is a restriction of a circular conv on N ≥ n + pad pixels, whose
    norm is max_ξ ‖A(ξ)‖ / sqrt(Δ_h Δ_w), A(ξ) stacking the Δ_h·Δ_w aliased
    frequencies of the kernel's DFT. (The paper prints the factor as Δ⁻²;
    1/Δ is what matches a dense SVD, see BUILD_NOTES.md §5.)

NaN/inf weights are refused (`upper_bounds.NonFiniteError`, naming the
argument); zero and empty operators get the exact answer 0 for both numbers.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.sparse import linalg as sla

from advjax.norms import upper_bounds
from advjax.norms.conv_geometry import as_pair, axis_embedding, conv_fn, conv_padding, dilate
from advjax.norms.upper_bounds import NonFiniteError, check_finite, certified

HIGHEST = jax.lax.Precision.HIGHEST


class NormResult(NamedTuple):
  """An operator norm: `estimate` ≤ ‖W‖ ≤ `upper` (up to rounding).

  Attributes:
    estimate: sqrt of the Rayleigh quotient of WᵀW at the returned unit
      vector: a lower bound.
    upper: a certified upper bound, or None where no certificate was computed.
    iterations: WᵀW products used ('lanczos'; 0 for 'power', whose count
      optax does not report).
    residual: ‖WᵀWv − λv‖ / λ at the returned vector v.
    method: 'lanczos' (scipy eigsh) or 'power' (optax), how `estimate` was found.
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
# The estimate: Lanczos (scipy) or power iteration (optax) on WᵀW.

def _check_dtype(dtype) -> jnp.dtype:
  """float32, or float64 inside `jax.enable_x64(True)`."""
  dtype = jnp.dtype(dtype)
  if dtype == jnp.float64 and not jax.config.jax_enable_x64:
    raise ValueError("dtype=float64 needs 64-bit JAX: call inside "
                     "`with jax.enable_x64(True):` (never set it globally).")
  if dtype not in (jnp.float32, jnp.float64):
    raise ValueError(f"dtype must be float32 or float64, got {dtype}.")
  return dtype


def _linear_ops(fn, input_shape, dtype, rng, args, check: bool = True):
  """(f, fᵀ, m) on flat vectors, m the output size; `args` are traced
  arguments (not constants, which XLA would fold in); `check`s linearity."""
  n = math.prod(input_shape)
  spec = jax.ShapeDtypeStruct((n,), dtype)
  f = lambda v, a: jnp.ravel(fn(v.reshape(input_shape), *a))

  def fT(y, a):
    try:
      return jax.linear_transpose(lambda v: f(v, a), spec)(y)[0]
    except Exception:  # a primitive JAX cannot transpose: use the VJP at 0.
      return jax.vjp(lambda v: f(v, a), jnp.zeros(n, dtype))[1](y)[0]

  if not check:  # a map built linear here (conv_norm, dense_norm)
    return f, fT, math.prod(jax.eval_shape(f, spec, args).shape)
  u, w = jnp.asarray(rng.standard_normal((2, n)), dtype)
  fj = jax.jit(f)
  fu, fw, f0 = fj(u, args), fj(w, args), fj(jnp.zeros(n, dtype), args)
  if not (jnp.isfinite(fu).all() and jnp.isfinite(f0).all()):
    raise NonFiniteError("fn gives NaN/inf on a finite input: the weights it "
                         "closes over are non-finite (or overflow); fix them.")
  scale = jnp.linalg.norm(fu) + jnp.linalg.norm(fw) + 1e-30
  if jnp.linalg.norm(f0) > 1e-6 * scale:
    raise ValueError("fn(0) ≠ 0: fn is affine (has a bias?); pass its linear part.")
  if jnp.linalg.norm(fj(2 * u - 3 * w, args) - (2 * fu - 3 * fw)) > 1e-4 * 5 * scale:
    raise ValueError("fn is not linear (f(2u − 3w) ≠ 2f(u) − 3f(w)); operator "
                     "norms need the layer's linear map, e.g. the conv without "
                     "bias or activation.")
  return f, fT, int(fu.size)


def _dense_matrix(f, n: int, dtype, args) -> np.ndarray:
  """The explicit matrix of a flat linear map, as float64 (m, n)."""
  J = jax.jit(jax.vmap(f, in_axes=(0, None)))(jnp.eye(n, dtype=dtype), args)
  return np.asarray(J, np.float64).T  # rows of J: f(e_j)


def _eigsh_top(mv, dim: int, v0: np.ndarray, tol: float, max_iters: int,
               ncv: int) -> np.ndarray:
  """Top eigenvector of the PSD operator `mv` (host, float64) by ARPACK."""
  if dim <= ncv + 1:  # ARPACK needs k < ncv < dim; a small M is cheap to form
    M = np.stack([mv(e) for e in np.eye(dim)], 1)
    return np.linalg.eigh((M + M.T) / 2)[1][:, -1]
  op = sla.LinearOperator((dim, dim), matvec=mv, dtype=np.float64)
  try:
    return sla.eigsh(op, k=1, which="LA", v0=v0, ncv=ncv, tol=tol,
                     maxiter=max(1, max_iters // ncv))[1][:, 0]
  except sla.ArpackNoConvergence as e:  # return the best pair so far
    return e.eigenvectors[:, 0] if e.eigenvectors.shape[1] else v0


def _estimate(gram, dim, dtype, args, method, tol, max_iters, ncv, rng):
  """(λ, residual, iterations) of the top eigenpair of the jitted PSD `gram`."""
  v0 = rng.standard_normal(dim)
  v0 /= np.linalg.norm(v0)
  gj = jax.jit(gram)
  calls = [0]

  def host_mv(v):
    calls[0] += 1
    return np.asarray(gj(jnp.asarray(v, dtype), args), np.float64)

  w0 = np.asarray(gj(jnp.asarray(v0, dtype), args), np.float64)  # not counted
  if not np.isfinite(w0).all():
    raise NonFiniteError(f"WᵀW overflows {jnp.dtype(dtype).name} at a unit "
                         "vector: the weights are too large; rescale them or "
                         "use float64.")
  if not w0.any():
    # v0 is in the null space: for a random v0, the operator is (almost
    # surely) zero. ARPACK and power iteration would fail or give NaN
    # (0/0); the Rayleigh quotient at v0, 0, is still a valid lower bound.
    y = v0
  elif method == "lanczos":
    y = _eigsh_top(host_mv, dim, v0, tol, max_iters, ncv)
  else:
    run = jax.jit(lambda v, a: optax.power_iteration(
        lambda u: gram(u, a), v0=v, num_iters=max_iters,
        error_tolerance=tol, precision=HIGHEST)[1])
    y = np.asarray(run(jnp.asarray(v0, dtype), args), np.float64)
  # The Rayleigh quotient at the unit vector actually returned: ≤ λ_max.
  y = np.array(jnp.asarray(y / np.linalg.norm(y), dtype), np.float64)
  y /= np.linalg.norm(y)
  w = host_mv(y)
  lam = float(y @ w)
  if not math.isfinite(lam):
    raise NonFiniteError(f"the Rayleigh quotient came out {lam} in "
                         f"{jnp.dtype(dtype).name}: rescale the weights or use float64.")
  res = float(np.linalg.norm(w - lam * y) / max(lam, 1e-300))
  return lam, res, (calls[0] if method == "lanczos" else 0)


def operator_norm(fn: Callable, input_shape: Sequence[int], *,
                  dtype=jnp.float32, method: str = "lanczos",
                  tol: float | None = None, max_iters: int = 5000,
                  krylov_dim: int = 32, seed: int = 0,
                  certify: bool = True, dense_limit: int = 4096,
                  gram_rtol: float = 1e-4, args: tuple = (),
                  check_linear: bool = True) -> NormResult:
  """Spectral norm ‖W‖₂ of a linear map given as a function (§4.3).

  Finds the top eigenpair of WᵀW (or of WWᵀ when the output is smaller), with
  Wᵀ from `jax.linear_transpose`, in `dtype` at `precision=HIGHEST`, until the
  relative residual ‖WᵀWv − λv‖/λ ≤ tol.

  Args:
    fn: linear map x ↦ fn(x, *args), x of `input_shape` (no batch axis).
    input_shape: its input shape.
    dtype: float32 or float64 (float64 only inside `jax.enable_x64(True)`).
    method: 'lanczos' (scipy `eigsh`, ARPACK's implicitly restarted Lanczos,
      on the host around the jitted product; default) or 'power'
      (`optax.power_iteration`, the whole loop in one jit).
    tol: residual tolerance; default 1e-5 (float32) or 1e-9 (float64).
    max_iters: cap on WᵀW products.
    krylov_dim: Lanczos basis size (eigsh's `ncv`).
    seed: seed of the random start (numpy, so no PRNG compile).
    certify: compute a certified upper bound where one is affordable: Gram
      iteration on the explicit matrix when both dimensions ≤ `dense_limit`.
    dense_limit: largest input/output size materialised for the certificate.
    gram_rtol: Gram iteration stops within this of the estimate.
    args: arrays fn takes after x (e.g. the kernel): passed to the jitted
      code as arguments, so big weights are not compiled in as constants.
    check_linear: first check that fn is linear, not affine (four calls and
      a compile; `conv_norm` and `dense_norm`, whose maps are linear by
      construction, skip it).

  Returns:
    NormResult; `upper` is None when the operator is too big to certify here
    (use `conv_norm` / `dense_norm`, which have structured certificates).
    Empty operators (no inputs or no outputs) give exactly 0.

  Raises:
    NonFiniteError: an array in `args` (or the map's output) is NaN/inf.
  """
  t0 = time.time()
  for i, a in enumerate(jax.tree_util.tree_leaves(args)):
    check_finite(a, f"operator_norm: args[{i}]")
  input_shape = tuple(int(d) for d in input_shape)
  dtype = _check_dtype(dtype)
  tol = (1e-5 if dtype == jnp.float32 else 1e-9) if tol is None else tol
  if method not in ("lanczos", "power"):
    raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}.")
  with jax.default_matmul_precision("highest"):
    rng = np.random.RandomState(seed)
    f, fT, m = _linear_ops(fn, input_shape, dtype, rng, args, check_linear)
    n = math.prod(input_shape)
    if min(m, n) == 0:  # a map from or to nothing: ‖W‖ = 0 exactly
      return _exact_zero(method, certify, t0)
    # Iterate on the smaller side: ‖WᵀW‖ = ‖WWᵀ‖, shorter vectors.
    gram = ((lambda y, a: f(fT(y, a), a)) if m < n else
            (lambda v, a: fT(f(v, a), a)))
    lam, res, it = _estimate(gram, min(m, n), dtype, args, method, tol,
                             max_iters, krylov_dim, rng)
    est = math.sqrt(max(lam, 0.0))
    upper, how = None, None
    if certify and max(n, m) <= dense_limit:
      upper = upper_bounds.gram_upper(_dense_matrix(f, n, dtype, args), est,
                                      gram_rtol)
      how = "gram"
  return _result(est, upper, int(it), res, method, how, t0)


def _result(est, upper, it, res, method, how, t0) -> NormResult:
  """The NormResult, after checking that its bounds are finite (never NaN)."""
  est = certified(est, f"{method} estimate")
  upper = None if upper is None else certified(upper, f"{how} upper bound")
  return NormResult(est, upper, it, res, method, how, time.time() - t0)


def _exact_zero(method: str, certify: bool, t0: float) -> NormResult:
  """The norm of a zero or empty operator: 0, exactly (no iteration)."""
  return NormResult(0.0, 0.0 if certify else None, 0, 0.0, method,
                    "exact" if certify else None, time.time() - t0)


# ----------------------------------------------------------------------------
# Conv geometry.

def _check_conv(K: np.ndarray, input_hwc) -> None:
  """Raises a ValueError unless K is HWIO and input_hwc is (H, W, C_in)."""
  if K.ndim != 4:
    raise ValueError(f"kernel must be HWIO (kh, kw, C_in, C_out), got shape {K.shape}.")
  if len(input_hwc) != 3 or int(input_hwc[2]) != K.shape[2]:
    raise ValueError(f"input_hwc must be (H, W, C_in) with C_in = {K.shape[2]} "
                     f"(the kernel's third axis), got {tuple(input_hwc)}.")


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
  check_finite(kernel_hwio, "conv_norm: kernel_hwio")
  K = np.asarray(kernel_hwio)
  s, d = as_pair(stride, "stride"), as_pair(dilation, "dilation")
  circ = isinstance(padding, str) and padding.upper() == "CIRCULAR"
  _check_conv(K, input_hwc)
  hw = tuple(int(v) for v in input_hwc[:2])
  pads = conv_padding(padding, hw, K.shape[:2], s, d)
  keff = [(k - 1) * di + 1 for k, di in zip(K.shape[:2], d)]
  for n, p, k in zip(hw, pads, keff):
    if n + p[0] + p[1] < k or (circ and k > n):
      raise ValueError(f"input {hw} with padding {pads} is smaller than the "
                       f"(dilated) kernel {keff}: the conv has no output.")
  if not K.any():  # zero or empty kernel: the zero map
    return _exact_zero(options.get("method", "lanczos"), certify, t0)
  options.setdefault("check_linear", False)
  r = operator_norm(conv_fn(K, s, padding, d, hw), tuple(input_hwc),
                    certify=certify, args=(jnp.asarray(K),), **options)
  upper, how = r.upper, r.upper_method
  if certify:
    if circ:
      N = hw if hw[0] % s[0] == 0 and hw[1] % s[1] == 0 else None
    else:
      N = tuple(axis_embedding(n, p, k, si)
                for n, p, k, si in zip(hw, pads, keff, s))
    if N is not None:
      # Exact eigenvalues for small Gram sides, Cholesky screening for big.
      n = min(s[0] * s[1] * K.shape[2], K.shape[3])
      b = upper_bounds.circular_conv_norm(dilate(K, d), N, s,
                                          None if n <= 64 else 1e-4)
      if upper is None or b < upper:
        upper, how = b, f"fft-N={N[0]}x{N[1]}"
  return _result(r.estimate, upper, r.iterations, r.residual, r.method, how, t0)


def dense_norm(W: Any, *, certify: bool = True, gram_rtol: float = 1e-4,
               **options) -> NormResult:
  """Spectral norm of a dense layer's kernel W (in, out); bias ignored (§4.3).

  The estimate iterates on the smaller side. The certificate proves
  ‖W‖ ≤ estimate·(1 + `gram_rtol`) by a Cholesky factorisation of μI − WᵀW
  (`cholesky_upper`); should that fail, Gram iteration on W (float64),
  which for a matrix converges to the exact norm.
  """
  t0 = time.time()
  check_finite(W, "dense_norm: W")
  W = np.asarray(W)
  if W.ndim != 2:
    raise ValueError(f"W must be a matrix (in, out), got shape {W.shape}.")
  if not W.any():  # zero or empty (in or out = 0): the zero map
    return _exact_zero(options.get("method", "lanczos"), certify, t0)
  fn = lambda x, w: jnp.dot(x, w.astype(x.dtype), precision=HIGHEST)
  options.setdefault("check_linear", False)
  r = operator_norm(fn, W.shape[:1], certify=False, args=(jnp.asarray(W),),
                    **options)
  upper, how = None, None
  if certify:
    upper, how = upper_bounds.cholesky_upper(W, r.estimate, gram_rtol), "cholesky"
    if upper is None:
      upper, how = upper_bounds.gram_upper(W, r.estimate, gram_rtol), "gram"
  return _result(r.estimate, upper, r.iterations, r.residual, r.method, how, t0)
