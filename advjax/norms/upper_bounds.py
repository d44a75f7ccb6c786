"""Certified upper bounds on operator norms (Szegedy et al. §4.3), float64.

No library has these; `advjax.norms.spectral` pairs them with its lower estimates:

  * `gram_upper`: Gram iteration (Delattre et al. 2023) on an explicit matrix;
  * `cholesky_upper`: given a lower bound ℓ, proves ‖W‖ ≤ ℓ(1 + rtol) by a
    Cholesky factorisation of μI − WᵀW (one syrk and one potrf, against
    the repeated n³ products of Gram iteration);
  * `circular_conv_norm`: the polyphase FFT formula for a strided circular
    convolution (which bounds the zero-padded one it contains), per frequency
    exact (eigenvalues) or screened by the same Cholesky test.

Each refuses NaN/inf input (`NonFiniteError`, naming the argument), answers 0
exactly for zero and empty operators, and checks its result before returning
it: a certified bound is a finite float or an error, never NaN or inf.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.linalg import blas, lapack


class NonFiniteError(ValueError):
  """Weights or a bound are NaN/inf: no certified norm exists for them."""


def check_finite(a: Any, what: str) -> None:
  """Raises a one-line NonFiniteError naming `what` if `a` holds NaN/inf."""
  a = np.asarray(a)
  bad = a.size - int(np.count_nonzero(np.isfinite(a)))
  if bad:
    raise NonFiniteError(
        f"{what} holds {bad} NaN/inf of its {a.size} entries, so it has no norm "
        "bound: fix the weights (the training diverged, or the file is damaged).")


def certified(value: float, what: str) -> float:
  """`value` as a float if finite; raises otherwise (guards every return)."""
  value = float(value)
  if not math.isfinite(value):
    raise NonFiniteError(f"{what} came out {value}, not a finite bound (overflow "
                         "of finite weights?): rescale the weights.")
  return value


def _matrix(W: Any, what: str) -> np.ndarray:
  """W as a finite float64 matrix, or an error naming `what`."""
  check_finite(W, what)
  A = np.asarray(W, np.float64)
  if A.ndim != 2:
    raise ValueError(f"{what} must be a matrix, got shape {A.shape}.")
  return A


def _pow2(A: np.ndarray) -> float:
  """A power of two s with max |A/s| in [0.5, 1): scaling by it is exact (no
  rounding), and keeps squares and products of A clear of overflow and of
  underflow (1e-200 entries would otherwise square to 0 and bound a nonzero
  matrix by 0). 1 for a zero matrix."""
  top = float(np.max(np.abs(A))) if A.size else 0.0
  return math.ldexp(1.0, math.frexp(top)[1]) if top > 0 else 1.0


def _tall_scaled(A: np.ndarray, lower: float):
  """(A/s with at least as many rows as columns, lower/s, s) for s = _pow2(A):
  the exact rescaling both certificates start from."""
  s = _pow2(A)
  A = A / s
  return (A.T if A.shape[0] < A.shape[1] else A), lower / s, s


def gram_upper(W: Any, lower: float = 0.0, rtol: float = 1e-4,
               max_steps: int = 16) -> float:
  """Certified ‖W‖₂ ≤ bound by Gram iteration (Delattre et al. 2023), float64.

  G₀ = W, G_{t+1} = (G_t/r_t)ᵀ(G_t/r_t) with r_t = ‖G_t‖_F gives
  ‖W‖ ≤ exp(Σ_{i<t} 2^{−i} log r_i) · ‖G_t‖_F^{2^{−t}}, the Schatten-2^{t+1}
  norm, which decreases to ‖W‖ (§4.3's per-layer bound, certified). Stops once
  the bound is within `rtol` of a known `lower` bound, when it stops
  improving, or after `max_steps`.
  """
  G = _matrix(W, "gram_upper: W")
  if not G.any():  # zero or empty: exactly 0
    return 0.0
  G, lower, s = _tall_scaled(G, lower)
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
  return certified(s * best, "gram_upper")


def _below(G: np.ndarray, mu: float) -> bool:
  """Whether λ_max(G) ≤ mu·(1 + rounding) for Hermitian G: Cholesky of μI − G.

  A Cholesky factorisation that completes in floating point is the exact one
  of μI − G + E with ‖E‖ ≤ 2(n+1)²·u·(μ + ‖G‖) (Demmel 1989); callers add
  that margin (`_MARGIN`). Reads the upper triangle only. LAPACK's ?potrf
  costs n³/3, against ~4n³ for the eigenvalues.
  """
  A = np.array(-G, order="F")
  A[np.diag_indices_from(A)] += mu
  potrf = (lapack.zpotrf if np.iscomplexobj(A) else lapack.dpotrf)
  return potrf(A, lower=0, overwrite_a=1, clean=0)[1] == 0


def _margin(n: int) -> float:
  """Relative rounding margin of a passed `_below` test on an n×n matrix."""
  return 4.0 * (n + 1) ** 2 * np.finfo(np.float64).eps + 1e-12


def cholesky_upper(W: Any, lower: float, rtol: float = 1e-4,
                   tries: int = 4) -> float | None:
  """Certified ‖W‖₂ ≤ bound from a known lower bound (§4.3), float64.

  Forms G = WᵀW on the smaller side (BLAS syrk) and proves λ_max(G) ≤ μ by
  a Cholesky factorisation of μI − G, for μ = (lower·(1 + rtol))², widening
  the gap tenfold up to `tries` times. Returns sqrt(μ·(1 + margin)), or None
  if every μ failed (the lower bound was far from the norm). One syrk and a
  Cholesky, against the repeated n³ products of Gram iteration.
  """
  A = _matrix(W, "cholesky_upper: W")
  if not math.isfinite(lower):
    raise NonFiniteError(f"cholesky_upper: lower = {lower}; pass a finite lower bound.")
  if not A.any():  # zero or empty: exactly 0
    return 0.0
  A, lower, s = _tall_scaled(A, lower)
  # C-ordered A (m, n) is Aᵀ in Fortran order: syrk of it gives AᵀA, no copy.
  G = blas.dsyrk(1.0, np.ascontiguousarray(A).T, trans=0, lower=0)
  for i in range(tries):
    mu = (lower * (1 + rtol * 10 ** i)) ** 2
    if mu > 0 and _below(G, mu):
      return certified(s * math.sqrt(mu * (1 + _margin(G.shape[0]))),
                       "cholesky_upper")
  return None


def _aliased_grams(K: np.ndarray, N, stride):
  """For each row η of output frequencies: the (Mw, n, n) Gram matrices of A(η).

  A(η) = [K̂(η + a·N/Δ)]_a is the D × (C·Δ²) block of aliased kernel DFTs; the
  Gram side is the smaller of C·Δ² and D. Rows Mh − η hold the conjugates of
  row η for a real kernel (K̂(−ω) = conj K̂(ω)), so half the rows suffice.
  """
  (Nh, Nw), (sh, sw) = N, stride
  kh, kw, C, D = K.shape
  Kw = np.zeros((kh, Nw, C, D))
  np.add.at(Kw, (slice(None), np.arange(kw) % Nw), K)  # folds kw > Nw too
  Kw = np.fft.fft(Kw, axis=1)  # (kh, Nw, C, D)
  Mh, Mw = Nh // sh, Nw // sw
  for eta in range(Mh // 2 + 1):
    w = eta + Mh * np.arange(sh)  # the Δ_h aliased row frequencies
    F = np.exp(-2j * np.pi * np.outer(w, np.arange(kh)) / Nh)  # (sh, kh)
    B = np.tensordot(F, Kw, axes=(1, 0))  # (sh, Nw, C, D), one BLAS call
    B = B.reshape(sh, sw, Mw, C, D).transpose(2, 0, 1, 3, 4).reshape(
        Mw, sh * sw * C, D)
    Bh = np.ascontiguousarray(B.conj().transpose(0, 2, 1))
    # B Bᴴ or Bᴴ B, whichever is smaller: the same nonzero eigenvalues.
    yield B @ Bh if sh * sw * C <= D else Bh @ B


def _top_eigs_lower(G: np.ndarray, k: int = 24) -> np.ndarray:
  """(B,) top Ritz values of k batched Lanczos steps on Hermitian G (B, n, n).

  Each is ≤ λ_max(G_b) up to rounding; it only picks the Cholesky level μ, so
  an inaccurate one costs time (an eigensolve), never the certificate.
  """
  b, n = G.shape[:2]
  k = min(k, n)
  Q = np.zeros((b, k, n), G.dtype)
  al, be = np.zeros((b, k)), np.zeros((b, k))
  q = np.random.RandomState(0).standard_normal(n).astype(G.dtype)
  q = np.broadcast_to(q / np.linalg.norm(q), (b, n))
  for j in range(k):
    Q[:, j] = q
    # einsum, not matmul: a batch of tiny matvecs through multithreaded BLAS
    # costs 10-40x more on a loaded machine (measured).
    w = np.einsum("bij,bj->bi", G, q)
    al[:, j] = np.einsum("bn,bn->b", q.conj(), w).real
    for _ in range(2):  # full reorthogonalisation, twice (Parlett)
      w = w - np.einsum("bkn,bk->bn", Q[:, :j + 1],
                        np.einsum("bkn,bn->bk", Q[:, :j + 1].conj(), w))
    be[:, j] = np.linalg.norm(w, axis=1)
    q = w / np.maximum(be[:, j:j + 1], 1e-300)
  T = np.zeros((b, k, k))
  i = np.arange(k)
  T[:, i, i] = al
  T[:, i[:-1], i[1:]] = T[:, i[1:], i[:-1]] = be[:, :-1]
  return np.linalg.eigvalsh(T)[:, -1]


def _certified_max(G: np.ndarray, mu: float, margin: float) -> float:
  """max_b λ_max(G_b) or a certified bound above it: each G_b ≤ μ by Cholesky,
  eigenvalues only for the G_b that fail."""
  A = -G
  A[:, np.arange(G.shape[1]), np.arange(G.shape[1])] += mu
  try:
    np.linalg.cholesky(A)  # all pass: one batched LAPACK call
    return mu * (1 + margin)
  except np.linalg.LinAlgError:
    pass
  fail = []
  for g, a in zip(G, A):
    try:
      np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
      fail.append(g)
  best = float(np.linalg.eigvalsh(np.stack(fail))[:, -1].max())
  return max(best, mu * (1 + margin)) if len(fail) < len(G) else best


def circular_conv_norm(kernel: Any, N: tuple[int, int],
                       stride: tuple[int, int] = (1, 1),
                       rtol: float | None = None) -> float:
  """Norm of the strided circular conv on N_h × N_w (N divisible by stride).

  Polyphase formula (§4.3 corrected): max over the (N_h/Δ_h)·(N_w/Δ_w) output
  frequencies η of ‖A(η)‖/sqrt(Δ_h Δ_w), A(η) = [K̂(η + a·N/Δ)]_a the D × (C·Δ²)
  block of aliased kernel DFTs (unnormalised DFT). float64; one η-row at a
  time to keep memory at O(Δ_h·N_w·C·D).

  With `rtol` None every frequency's top eigenvalue is computed (eigvalsh):
  exact up to rounding. With `rtol`, a short Lanczos run per frequency gives
  λ̂(η) ≤ λ(η) and a Cholesky factorisation of μI − A(η)ᴴA(η), μ = (1 + rtol)
  · max λ̂ so far, proves the frequency below μ (eigenvalues only where that
  fails): still a certified bound, at most a factor sqrt(1 + rtol) above the
  exact norm, for a Cholesky instead of an eigensolver per frequency.
  """
  check_finite(kernel, "circular_conv_norm: kernel")
  K = np.asarray(kernel, np.float64)
  if K.ndim != 4:
    raise ValueError(f"circular_conv_norm: kernel must be HWIO (kh, kw, C_in, "
                     f"C_out), got shape {K.shape}.")
  (Nh, Nw), (sh, sw) = N, stride
  if Nh % sh or Nw % sw:
    raise ValueError(f"circular size {N} must be divisible by the stride {stride}.")
  if not K.any():  # zero or empty (C_in or C_out = 0): exactly 0
    return 0.0
  scale = _pow2(K)
  K = K / scale
  n = min(sh * sw * K.shape[2], K.shape[3])
  best, lam = 0.0, 0.0
  for G in _aliased_grams(K, N, stride):
    if rtol is None:
      best = max(best, float(np.linalg.eigvalsh(G)[:, -1].max()))
    else:
      lam = max(lam, float(_top_eigs_lower(G).max()))
      best = max(best, _certified_max(G, lam * (1 + rtol), _margin(n)))
  return certified(scale * math.sqrt(max(best, 0.0) / (sh * sw)),
                   "circular_conv_norm")
