"""The c search of the §4.1 attack as a solver: documented state, init / step / done.

For each example the paper minimises c·‖r‖² + loss_f(x + r, l) over the box
and searches c for the smallest distortion that still reaches l. c sits on the
norm term, so the minimum distortion comes from the LARGEST c whose minimiser
reaches l: a geometric bracket (c times `c_factor` after a success, divided
after a failure), then `bisect_steps` bisections in log c. All lanes advance
together; a lane that is done is frozen by masks. The shape follows
optimistix's solvers: `init` builds the state, `step` advances it by one
solve per lane, `done` says when every lane has finished.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from advjax import criteria
from advjax.attack import _lbfgsb
from advjax.attack.lanes import Lanes
from advjax.attack.options import Search, Solve


class State(NamedTuple):
  """The c search's state, per lane (B,) unless said.

  Attributes:
    c: the c of the next solve.
    c_ok: the largest c whose minimiser reached l (0: none yet).
    c_fail: the smallest c whose minimiser did not (inf: none yet).
    best_z: the closest point that reached l, (B, n) (x while none).
    best_l2: its ‖r‖₂ (inf: none; 0 for lanes done before any solve).
    best_c: its c (0: no success; inf: x itself was already l).
    last_z: the last solve's minimiser, (B, n) (a warm start).
    n_bracket, n_bisect: bracket and bisection steps taken.
    iters: inner L-BFGS iterations, summed.
    solves: solves run.
    evals: objective evaluations (each a forward and a backward pass).
    finished: the lane's search has ended.
  """
  c: jax.Array
  c_ok: jax.Array
  c_fail: jax.Array
  best_z: jax.Array
  best_l2: jax.Array
  best_c: jax.Array
  last_z: jax.Array
  n_bracket: jax.Array
  n_bisect: jax.Array
  iters: jax.Array
  solves: jax.Array
  evals: jax.Array
  finished: jax.Array


def penalty(apply, shape: tuple[int, ...], away: bool = False):
  """The §4.1 objective on one flat z: c·‖z − x‖² + CE(logits(z) / t, l), t the
  example's `criteria.temperature` (1 for the paper's nets)."""
  def fun(z, params, x, l, c, t=1.0):
    return c * jnp.sum((z - x) ** 2) + criteria.ce(apply(params, z.reshape(shape)) / t, l,
                                                   away)
  return fun


def solver(fun, opts: Solve, lo, hi, t):
  """solve(z0, done, params, x, l, c) -> SolveResult on a batch of flat lanes
  (t: the lanes' temperatures, see `penalty`)."""
  if opts.solver == "pqn":
    vg = jax.vmap(jax.value_and_grad(fun), in_axes=(0, None, 0, 0, 0, 0))
    return lambda z0, done, params, x, l, c: _lbfgsb.pqn(
        lambda z: vg(z, params, x, l, c, t), z0, done, lo, hi, opts)
  per_lane = jnp.ndim(lo) == 2  # a box per example: vmapped with the lane
  def solve(z0, done, params, x, l, c):
    one = lambda z, d, xi, li, ci, ti, lo_i, hi_i: _lbfgsb.jaxopt_lbfgsb(
        fun, z, d, (params, xi, li, ci, ti), lo_i, hi_i, opts)
    axes = (0, 0, 0, 0, 0, 0) + ((0, 0) if per_lane else (None, None))
    return jax.vmap(one, in_axes=axes)(z0, done, x, l, c, t, lo, hi)
  return solve


def init(opts: Search, x, done) -> State:
  """The state before any solve; lanes `done` (x already reaches l) never solve."""
  B = x.shape[0]
  full = lambda v, dt=jnp.float32: jnp.full((B,), v, dt)
  zero = full(0, jnp.int32)
  return State(c=full(opts.c_init), c_ok=full(0.), c_fail=full(jnp.inf), best_z=x,
               best_l2=jnp.where(done, 0., jnp.inf), best_c=jnp.where(done, jnp.inf, 0.),
               last_z=x, n_bracket=zero, n_bisect=zero, iters=zero, solves=zero,
               evals=zero, finished=done)


def _next_c(s: State, ok, opts: Search):
  """Bounds and next c per lane after solves at s.c that did (ok) or did not succeed."""
  c_ok = jnp.where(ok, jnp.maximum(s.c_ok, s.c), s.c_ok)
  c_fail = jnp.where(ok, s.c_fail, jnp.minimum(s.c_fail, s.c))
  both = (c_ok > 0) & jnp.isfinite(c_fail)
  c = jnp.where(both, jnp.sqrt(c_ok * jnp.where(both, c_fail, 1.)),
                jnp.where(ok, s.c * opts.c_factor, s.c / opts.c_factor))
  return c, c_ok, c_fail, both


def step(s: State, solve, ln: Lanes, opts: Search) -> State:
  """One solve per unfinished lane at its c, then the next c."""
  was = (s.c_ok > 0) & jnp.isfinite(s.c_fail)
  have = jnp.isfinite(s.best_l2)
  z0 = jnp.where(have[:, None], s.best_z, s.last_z) if opts.warm_start else ln.x
  res = solve(z0, s.finished, ln.params, ln.x, ln.l, s.c)
  z = jnp.clip(res.z, ln.lo, ln.hi)
  ok = ln.reached(z)
  l2 = criteria.l2(z - ln.x)
  better = criteria.prefer(have, s.best_l2, ok, l2)
  c, c_ok, c_fail, both = _next_c(s, ok, opts)
  n_bracket = s.n_bracket + (~was).astype(jnp.int32)
  n_bisect = s.n_bisect + was.astype(jnp.int32)
  fin = (both & (n_bisect >= opts.bisect_steps)) | (~both & (n_bracket >= opts.max_bracket))
  new = State(c=c, c_ok=c_ok, c_fail=c_fail, best_z=jnp.where(better[:, None], z, s.best_z),
              best_l2=jnp.where(better, l2, s.best_l2),
              best_c=jnp.where(better, s.c, s.best_c), last_z=z, n_bracket=n_bracket,
              n_bisect=n_bisect, iters=s.iters + res.iters, solves=s.solves + 1,
              evals=s.evals + res.evals, finished=fin)
  keep = lambda a, b: jnp.where(s.finished.reshape((-1,) + (1,) * (a.ndim - 1)), b, a)
  return jax.tree_util.tree_map(keep, new, s)


def done(s: State) -> jax.Array:
  """Whether every lane has finished."""
  return jnp.all(s.finished)


def result(s: State):
  """(z, c): the closest point that reached l, else the last solve's (smallest c)."""
  return jnp.where(jnp.isfinite(s.best_l2)[:, None], s.best_z, s.last_z), s.best_c
