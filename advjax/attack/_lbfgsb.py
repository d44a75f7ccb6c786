"""Box-constrained L-BFGS solvers for the batched attack (§4.1).

Two solvers; the attack (`advjax.attack.lbfgs`) picks one with `Solve.solver`
(`opts` below is an `advjax.attack.options.Solve`):

* `pqn` (default): a batched projected L-BFGS. Lanes (B, n) advance together;
  convergence, line-search acceptance and curvature skips are per-lane masks
  (`where`), never `cond`. The L-BFGS history is a ring buffer (m, B, n) with
  one shared slot written per iteration (in place), a per-lane rho of 0 marking
  skipped pairs. Free variables are those not held at a bound by the gradient;
  the two-loop direction is restricted to them, and an Armijo backtracking line
  search runs along the projection arc clip(z + t d) (projected quasi-Newton,
  as in Kim, Sra & Dhillon 2010). One line-search trial = one batched
  forward+backward pass over all lanes.
* `jaxopt_lbfgsb`: `jaxopt.LBFGSB` (jaxopt 0.8.5, unmaintained; the optional
  extra `pip install 'advjax[jaxopt]'`) for one example, vmapped by the
  attack. Kept as an option and for comparison: vmapped, its while loops run
  to the slowest lane and its line search computes both branches of every
  `cond`; see BUILD_NOTES.md §2 for measurements.

This is the only module that imports jaxopt, and only inside its adapter, so
the default solver needs no jaxopt.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class SolveResult(NamedTuple):
  """Per lane: the point, iterations, and objective evaluations (each one
  forward and one backward pass of the model)."""
  z: jax.Array
  iters: jax.Array
  evals: jax.Array


def _two_loop(q: jax.Array, S: jax.Array, Y: jax.Array, rho: jax.Array,
              gamma: jax.Array, k: jax.Array) -> jax.Array:
  """H·q per lane by the two-loop recursion; slot (k−1−i) % m is the i-th newest.

  S, Y are (m, B, n) ring buffers shared by all lanes (one slot written per
  iteration); rho (m, B) is 0 for empty slots and for pairs with s·y <= 0, so
  those drop out of the recursion.
  """
  m = S.shape[0]
  dot = lambda a, b: jnp.sum(a * b, -1, keepdims=True)
  alpha, idx = [], [(k - 1 - i) % m for i in range(m)]
  for j in idx:  # Unrolled: m is small and static.
    a = rho[j][:, None] * dot(S[j], q)
    q = q - a * Y[j]
    alpha.append(a)
  r = gamma[:, None] * q
  for a, j in reversed(list(zip(alpha, idx))):
    b = rho[j][:, None] * dot(Y[j], r)
    r = r + S[j] * (a - b)
  return r


class _State(NamedTuple):
  z: jax.Array
  f: jax.Array
  g: jax.Array
  S: jax.Array
  Y: jax.Array
  rho: jax.Array
  gamma: jax.Array
  k: jax.Array
  it: jax.Array
  evals: jax.Array
  done: jax.Array


def _direction(st: _State, lo, hi) -> jax.Array:
  """Per lane a descent direction on the free variables (steepest descent first)."""
  free = ~(((st.z <= lo) & (st.g > 0)) | ((st.z >= hi) & (st.g < 0)))
  pg = jnp.where(free, st.g, 0.)
  d = -jnp.where(free, _two_loop(pg, st.S, st.Y, st.rho, st.gamma, st.k), 0.)
  # No history yet: scipy's first step has length 1 / ‖g‖; keep that scale.
  gn = jnp.linalg.norm(pg, axis=-1, keepdims=True)
  sd = -pg * jnp.minimum(1., 1. / jnp.maximum(gn, 1e-12))
  ok = (jnp.sum(d * st.g, -1) < 0) & jnp.all(jnp.isfinite(d), -1) & (st.it > 0)
  return jnp.where(ok[:, None], d, sd)


def _line_search(vg, st: _State, d, lo, hi, maxls: int):
  """Armijo backtracking along the projection arc z(t) = clip(z + t d), per lane.

  Every trial evaluates all lanes (one batched pass); lanes that have accepted
  keep their point. Returns the new z, f, g, acceptance and trial counts.
  """
  def cond(c):
    return jnp.any(~c[4]) & (c[6] < maxls)

  def body(c):
    t, z, f, g, ok, n, i = c
    zt = jnp.clip(st.z + t[:, None] * d, lo, hi)
    ft, gt = vg(zt)
    dec = jnp.sum(st.g * (zt - st.z), -1)
    good = ~ok & jnp.isfinite(ft) & (ft <= st.f + 1e-4 * dec) & (dec < 0)
    # Quadratic-interpolation backtrack, safeguarded to [0.1 t, 0.5 t].
    tq = -dec * t / jnp.maximum(2. * (ft - st.f - dec), 1e-30)
    tn = jnp.where(jnp.isfinite(tq), jnp.clip(tq, 0.1 * t, 0.5 * t), 0.5 * t)
    pick = lambda a, b: jnp.where(good.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
    return (jnp.where(ok | good, t, tn), pick(zt, z), pick(ft, f), pick(gt, g),
            ok | good, n + (~ok).astype(jnp.int32), i + 1)

  nb = st.f.shape[0]
  init = (jnp.ones_like(st.f), st.z, st.f, st.g, st.done, jnp.zeros(nb, jnp.int32),
          jnp.int32(0))
  _, z, f, g, ok, n, _ = jax.lax.while_loop(cond, body, init)
  return z, f, g, ok & ~st.done, n


def _push(st: _State, s, y, ok):
  """Writes (s, y) into the shared ring slot k; rho = 0 unless s·y > 0 and ok."""
  sy, yy = jnp.sum(s * y, -1), jnp.sum(y * y, -1)
  keep = ok & (sy > 1e-10 * yy)
  slot = st.k % st.S.shape[0]
  S = jax.lax.dynamic_update_index_in_dim(st.S, s, slot, 0)
  Y = jax.lax.dynamic_update_index_in_dim(st.Y, y, slot, 0)
  rho = st.rho.at[slot].set(jnp.where(keep, 1. / jnp.where(keep, sy, 1.), 0.))
  gamma = jnp.where(keep, sy / jnp.where(keep, yy, 1.), st.gamma)
  return S, Y, rho, gamma


def pqn(vg: Callable[[jax.Array], tuple[jax.Array, jax.Array]], z0: jax.Array,
        done: jax.Array, lo: Any, hi: Any, opts) -> SolveResult:
  """Batched projected L-BFGS: lanes z0 (B, n), values and gradients vg(z).

  vg maps (B, n) to (f (B,), g (B, n)) with lanes independent (a vmapped
  per-example objective). Lanes with `done` never move. The loop runs while any
  lane is active; converged lanes are frozen with per-lane masks.
  """
  f0, g0 = vg(z0)
  (B, n), m = z0.shape, opts.history
  st = _State(z0, f0, g0, jnp.zeros((m, B, n), z0.dtype),
              jnp.zeros((m, B, n), z0.dtype), jnp.zeros((m, B), z0.dtype),
              jnp.ones((B,), z0.dtype), jnp.int32(0), jnp.zeros(B, jnp.int32),
              jnp.where(done, 0, 1).astype(jnp.int32), done)

  def body(st: _State) -> _State:
    d = _direction(st, lo, hi)
    z, f, g, ok, nls = _line_search(vg, st, d, lo, hi, opts.maxls)
    S, Y, rho, gamma = _push(st, z - st.z, g - st.g, ok)
    pg = jnp.clip(z - g, lo, hi) - z
    fmax = jnp.maximum(jnp.maximum(jnp.abs(st.f), jnp.abs(f)), 1.)
    small = (jnp.max(jnp.abs(pg), -1) <= opts.gtol) | (st.f - f <= opts.ftol * fmax)
    act = ~st.done
    # A failed line search ends the lane at its last accepted point.
    sel = lambda a, b: jnp.where(ok.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
    return _State(sel(z, st.z), sel(f, st.f), sel(g, st.g), S, Y, rho, gamma,
                  st.k + 1, st.it + act.astype(jnp.int32), st.evals + nls,
                  st.done | ~ok | small)

  st = jax.lax.while_loop(lambda s: jnp.any(~s.done) & (s.k < opts.maxiter), body, st)
  return SolveResult(st.z, st.it, st.evals)


def jaxopt_lbfgsb(fun: Callable[..., jax.Array], z0: jax.Array, done: jax.Array,
                  args: tuple, lo: Any, hi: Any, opts) -> SolveResult:
  """`jaxopt.LBFGSB` for one example (vmap it). `done` lanes still cost a solve."""
  try:
    with warnings.catch_warnings():  # jaxopt warns on import that it is unmaintained
      warnings.simplefilter("ignore", DeprecationWarning)
      import jaxopt  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("solver='jaxopt' needs jaxopt: pip install 'advjax[jaxopt]' "
                      "(or use the default solver 'pqn').") from e
  solver = jaxopt.LBFGSB(fun=fun, maxiter=opts.maxiter, tol=opts.gtol,
                         history_size=opts.history, maxls=opts.maxls,
                         linesearch=opts.linesearch, implicit_diff=False)
  bounds = (jnp.broadcast_to(lo, z0.shape), jnp.broadcast_to(hi, z0.shape))
  res = solver.run(z0, bounds, *args)
  z = jnp.where(done, z0, res.params)
  it = jnp.where(done, 0, res.state.iter_num).astype(jnp.int32)
  return SolveResult(z, it, jnp.where(done, 0, res.state.num_fun_eval).astype(jnp.int32))

