"""The box-constrained L-BFGS attack of Szegedy et al. §4.1, batched.

The paper's problem is D(x, l) = argmin ‖r‖₂ s.t. f(x+r) = l, x+r in the box,
approximated by minimising c·|r| + loss_f(x+r, l) over the box and searching c.

Formulation used here (documented in BUILD_NOTES.md §2):

    minimise over z = x + r ∈ [lo, hi]^m:   c·‖z − x‖₂² + CE(logits(z), l)

* c sits on the norm term, as in the paper, so the minimum distortion comes
  from the LARGEST c whose minimiser still reaches l. Dividing by c shows this
  is cleverhans' ‖r‖² + (1/c)·CE: the same family of minimisers.
* The squared norm keeps the objective smooth at r = 0, where every solve
  starts; the c search scans the same (‖r‖, CE) trade-off curve either way.
* The c search is per example but all examples advance together: a geometric
  bracket, then `bisect_steps` bisections in log c. The best (smallest ‖r‖)
  successful point at any c is kept; each solve is warm-started from it.
* Reaching l needs a lead of MARGIN in the search (`advjax.boundary`);
  `success` is the argmax on the returned x_adv, with finite logits.
* By default (not in `PAPER`) a first-order pass (`advjax.ddn`) runs from x
  beside the search; of the two points, each shrunk to the decision boundary,
  the closer is walked along the boundary towards x.

`lbfgs` takes any JAX model (`advjax.adapt`: a function, an (apply_fn, params)
pair, a Flax NNX or Equinox module) and any box `bounds=(lo, hi)`; the weights
and the box are jit arguments, the options one hashable `AttackOptions`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from advjax import _lbfgsb, adapt, boundary, convgrad, ddn
from advjax.options import PAPER, AttackOptions  # noqa: F401  (re-exported)
from advjax.checks import Prepared, check_labels, prepare


class AttackResult(NamedTuple):
  """Per-example results; every field has leading dimension B.

  Attributes:
    x_adv: adversarial inputs, always inside the box.
    r: x_adv − x.
    success: argmax logits(x_adv) == target with finite logits, re-checked.
    target: the label attacked.
    c: the norm weight of the returned point (inf: x was already the target;
      0: no success was found).
    l2: ‖r‖₂.
    distortion: the paper's per-pixel RMS, sqrt(mean(r²)) (Tables 1–4).
    iterations: inner L-BFGS iterations, summed over all solves.
    solves: number of L-BFGS solves (c values tried).
  """
  x_adv: jax.Array
  r: jax.Array
  success: jax.Array
  target: jax.Array
  c: jax.Array
  l2: jax.Array
  distortion: jax.Array
  iterations: jax.Array
  solves: jax.Array


def penalty(apply, shape: tuple[int, ...], away: bool = False):
  """The §4.1 objective on one flat z: c·‖z − x‖² + CE(logits(z), l)."""
  def fun(z, params, x, l, c):
    return c * jnp.sum((z - x) ** 2) + boundary.ce(apply(params, z.reshape(shape)), l, away)
  return fun


class _Search(NamedTuple):
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
  finished: jax.Array


def _next_c(s: _Search, ok, opts: AttackOptions):
  """Bounds and next c per lane after solves at s.c that did (ok) or did not succeed."""
  c_ok = jnp.where(ok, jnp.maximum(s.c_ok, s.c), s.c_ok)
  c_fail = jnp.where(ok, s.c_fail, jnp.minimum(s.c_fail, s.c))
  both = (c_ok > 0) & jnp.isfinite(c_fail)
  c = jnp.where(both, jnp.sqrt(c_ok * jnp.where(both, c_fail, 1.)),
                jnp.where(ok, s.c * opts.c_factor, s.c / opts.c_factor))
  return c, c_ok, c_fail, both


def _solver(fun, opts: AttackOptions, lo, hi):
  """solve(z0, done, params, x, l, c) -> (z, iters) on a batch of flat lanes."""
  if opts.solver == "pqn":
    vg = jax.vmap(jax.value_and_grad(fun), in_axes=(0, None, 0, 0, 0))
    def solve(z0, done, params, x, l, c):
      res = _lbfgsb.pqn(lambda z: vg(z, params, x, l, c), z0, done, lo, hi, opts.solve)
      return res.z, res.iters
    return solve
  def solve(z0, done, params, x, l, c):
    one = lambda z, d, xi, li, ci: _lbfgsb.jaxopt_lbfgsb(
        fun, z, d, (params, xi, li, ci), lo, hi, opts.solve)
    res = jax.vmap(one)(z0, done, x, l, c)
    return res.z, res.iters
  return solve


def _search(apply, shape, opts: AttackOptions, params, x, l, done, lo, hi, away):
  """The c search for flat lanes x (B, n): all lanes advance together."""
  solve = _solver(penalty(apply, shape, away), opts, lo, hi)
  logits = adapt.batched(apply)
  B = x.shape[0]
  full = lambda v, dt=jnp.float32: jnp.full((B,), v, dt)
  s = _Search(full(opts.c_init), full(0.), full(jnp.inf), x,
              jnp.where(done, 0., jnp.inf), jnp.where(done, jnp.inf, 0.), x,
              full(0, jnp.int32), full(0, jnp.int32), full(0, jnp.int32),
              full(0, jnp.int32), done)

  def body(s: _Search) -> _Search:
    was = (s.c_ok > 0) & jnp.isfinite(s.c_fail)
    have = jnp.isfinite(s.best_l2)[:, None]
    z0 = jnp.where(have, s.best_z, s.last_z) if opts.warm_start else x
    z, iters = solve(z0, s.finished, params, x, l, s.c)
    z = jnp.clip(z, lo, hi)
    ok = boundary.reaches(logits(params, z.reshape((B,) + shape)), l, away)
    l2 = jnp.linalg.norm(z - x, axis=-1)
    better = ok & (l2 < s.best_l2)
    c, c_ok, c_fail, both = _next_c(s, ok, opts)
    n_bracket = s.n_bracket + (~was).astype(jnp.int32)
    n_bisect = s.n_bisect + was.astype(jnp.int32)
    fin = (both & (n_bisect >= opts.bisect_steps)) | (~both & (n_bracket >= opts.max_bracket))
    new = _Search(c, c_ok, c_fail, jnp.where(better[:, None], z, s.best_z),
                  jnp.where(better, l2, s.best_l2), jnp.where(better, s.c, s.best_c),
                  z, n_bracket, n_bisect, s.iters + iters, s.solves + 1, fin)
    keep = lambda a, b: jnp.where(
        s.finished.reshape((-1,) + (1,) * (a.ndim - 1)), b, a)
    return jax.tree_util.tree_map(keep, new, s)

  s = jax.lax.while_loop(lambda s: jnp.any(~s.finished), body, s)
  # Never successful: return the last solve, which was at the smallest c.
  z = jnp.where(jnp.isfinite(s.best_l2)[:, None], s.best_z, s.last_z)
  return z, s.best_c, s.iters, s.solves


def _attack(apply, opts: AttackOptions, away: bool, params, x, target, lo, hi
            ) -> AttackResult:
  """The batched attack on validated inputs (jitted below): towards `target`,
  or (away) to any label but `target`, the returned target being the one
  reached."""
  B, shape = x.shape[0], x.shape[1:]
  apply = convgrad.canonical(apply)  # conv input gradients fast inside the loops
  logits = adapt.batched(apply)
  xf, lo, hi = x.reshape(B, -1), lo.reshape(-1), hi.reshape(-1)
  out0 = logits(params, x)  # once: the done test and the boundary steps' level at x
  done = (jnp.argmax(out0, -1) == target) != away  # r = 0, no solve
  f0 = boundary.above(out0, target, away)
  z, c, iters, solves = _search(apply, shape, opts, params, xf, target, done, lo, hi, away)
  z = jnp.clip(z, lo, hi)
  roots = opts.polish_steps or 10  # root steps of every boundary step after the search
  if opts.polish_steps:
    z = boundary.polish(logits, params, xf, z, target, shape, roots, f0, away)
  if opts.first_order_steps:  # a first-order point, shrunk to the boundary: the closer goes on
    zw = _first_order(apply, shape, opts, away, params, x, target, out0.shape[-1], lo, hi)
    zw = boundary.polish(logits, params, xf, zw, target, shape, roots, f0, away)
    z = jnp.where(done[:, None], xf, _closer(logits, params, xf, z, zw, target, shape, away))
  if opts.refine_steps:
    z = boundary.refine(apply, logits, params, xf, z, target, shape, lo, hi,
                        opts.refine_steps, roots, f0, away)
  x_adv = z.reshape(x.shape)
  r = x_adv - x
  out = logits(params, x_adv)
  success, pred = boundary.verdict(out, target, away)
  if away:  # the label reached (or, on failure, the runner-up)
    target = jnp.where(success, pred, jnp.argmax(out.at[jnp.arange(B), target].set(
        -jnp.inf), -1).astype(jnp.int32))
  l2 = jnp.sqrt(jnp.sum(r.reshape(B, -1) ** 2, -1))
  return AttackResult(x_adv, r, success, target, c, l2,
                      l2 / math.sqrt(xf.shape[1]), iters, solves)


def _first_order(apply, shape, opts: AttackOptions, away: bool, params, x, target, K: int,
                 lo, hi):
  """DDN's point (flat lanes) towards target; away from it, towards the label
  nearest to x by the linearised distance: targeted DDN there ends closer than
  DDN away from l (conv net 2.0%, MLP 0.3%; BUILD_NOTES.md, session 4)."""
  if away:
    target = boundary.screen(apply, K, 1, params, x, target)[:, 0]
  # 'box': step sizes in units of the box's RMS width (finite coordinates), 1 for
  # [0, 1] and 255 for [0, 255], so that the pass does not depend on how x is scaled
  w = jnp.where(jnp.isfinite(hi - lo), hi - lo, 0.0)
  rms = jnp.sqrt(jnp.sum(w * w) / jnp.maximum(jnp.sum(w > 0), 1))
  unit = jnp.where(rms > 0, rms, 1.0) if opts.first_order_unit == "box" else 1.0
  return ddn.steps_lanes(apply, shape, opts.first_order_steps, False, params,
                         x.reshape(len(x), -1), target, lo, hi, opts.first_order_gamma,
                         alpha=opts.first_order_alpha, unit=unit)


def _closer(logits, params, x, a, b, l, shape, away):
  """Per lane, b where it reaches l and a does not or b is closer to x; else a."""
  ok = lambda z: boundary.reaches(logits(params, z.reshape((z.shape[0],) + shape)), l, away)
  n = lambda z: jnp.sum((z - x) ** 2, -1)
  oa, ob = ok(a), ok(b)
  take = ob & (~oa | (n(b) < n(a)))
  return jnp.where(take[:, None], b, a)


_attack_jit = jax.jit(_attack, static_argnums=(0, 1, 2))


@jax.jit
def _best_of(a: AttackResult, b: AttackResult) -> AttackResult:
  """Per example, the successful result with the smaller ‖r‖ (a on ties)."""
  la = jnp.where(a.success, a.l2, jnp.inf)
  lb = jnp.where(b.success, b.l2, jnp.inf)
  take_b = (lb < la) | (~a.success & ~b.success & (b.l2 < a.l2))
  pick = lambda u, v: jnp.where(take_b.reshape((-1,) + (1,) * (u.ndim - 1)), v, u)
  out = jax.tree_util.tree_map(pick, a, b)
  return out._replace(iterations=a.iterations + b.iterations,
                      solves=a.solves + b.solves)


def random_targets(key: jax.Array, labels, num_classes: int) -> jax.Array:
  """A uniformly random label ≠ labels[i] per example (the paper's protocol)."""
  labels = jnp.asarray(labels, jnp.int32)
  off = jax.random.randint(key, labels.shape, 1, num_classes)
  return (labels + off) % num_classes


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _untargeted(apply, K: int, mode: str, params, x, label, key):
  """(label, target) of an untargeted mode; label defaults to the prediction."""
  logits = adapt.batched(apply)(params, x)
  label = jnp.argmax(logits, -1).astype(jnp.int32) if label is None else label
  if mode == "random":
    return label, random_targets(key, label, K)
  masked = jnp.where(jax.nn.one_hot(label, K, dtype=bool), -jnp.inf, logits)
  return label, jnp.argmax(masked, -1).astype(jnp.int32)


def solve_batch(p: Prepared, x, target=None, *, label=None,
                untargeted: str = "all", key=None) -> AttackResult:
  """The attack on an already validated batch (`prepare`); x may be sharded.

  Only jitted jax operations touch x, target and label, so they may be global
  arrays that span several processes (`advjax.driver`).
  """
  if target is not None:
    return _attack_jit(p.apply, p.options, False, p.params, x, target, p.lo, p.hi)
  K = p.num_classes
  mode = "logits" if untargeted == "all" else untargeted
  label, t = _untargeted(p.apply, K, mode, p.params, x, label, key)
  if untargeted != "all":
    return _attack_jit(p.apply, p.options, False, p.params, x, t, p.lo, p.hi)
  if p.options.joint:  # one search on 'any label but label'
    return _attack_jit(p.apply, p.options, True, p.params, x, label, p.lo, p.hi)
  n = p.options.screen
  cands = None if not n or n >= K - 1 else boundary.screen(p.apply, K, n, p.params, x, label)
  best = None
  for k in range(1, K) if cands is None else range(n):  # the closest over targets
    t = _shift(label, k, K) if cands is None else cands[:, k]
    res = _attack_jit(p.apply, p.options, False, p.params, x, t, p.lo, p.hi)
    best = res if best is None else _best_of(best, res)
  return best


@functools.partial(jax.jit, static_argnums=(1, 2))
def _shift(label, k: int, K: int):
  return ((label + k) % K).astype(jnp.int32)


def check_untargeted(untargeted: str, key) -> None:
  """Raises for an unknown untargeted mode or 'random' without a key."""
  if untargeted not in ("all", "logits", "random"):
    raise ValueError(f"untargeted={untargeted!r}; choose 'all', 'logits' or 'random'.")
  if untargeted == "random" and key is None:
    raise ValueError("untargeted='random' needs a PRNG key: pass key=jax.random.PRNGKey(0).")


def _empty(x: np.ndarray, target) -> AttackResult:
  """The result of a batch of 0 examples."""
  z = np.zeros(0, np.float32)
  return AttackResult(x, x, np.zeros(0, bool), np.zeros(0, np.int32) if target is None
                      else np.asarray(target, np.int32), z, z, z,
                      np.zeros(0, np.int32), np.zeros(0, np.int32))


def lbfgs(model: Any, x, target=None, *, bounds=(0.0, 1.0),
          options: AttackOptions = AttackOptions(), label=None,
          untargeted: str = "all", key: jax.Array | None = None) -> AttackResult:
  """The box-constrained L-BFGS attack (Szegedy et al. §4.1) on a batch.

  For each example minimises c·‖r‖₂² + CE(logits(x+r), l) over x+r in the box
  with box-constrained L-BFGS, searching c per example (geometric bracket,
  then bisection in log c; all examples advance together) and keeping the
  smallest successful r (by default also beside a first-order DDN pass, then
  walked along the decision boundary: `AttackOptions`). Examples already
  classified as their target return r = 0 without a solve. Compiled once per
  (model computation, input shape, options); the weights and the box are
  arguments, so new weights of the same shapes reuse the compiled attack.

  Args:
    model: a function f(x (B, ...)) -> logits (B, K); a pair (apply_fn,
      params) with apply_fn(params, x) -> (B, K) (Flax linen, Haiku, advjax
      `Model.apply`); a Flax NNX module (batched); an Equinox module (called
      on one example).
    x: inputs (B, ...) inside the box.
    target: (B,) int labels in [0, K), or None for an untargeted attack.
    bounds: (lo, hi), scalars or arrays broadcastable to one input; default
      the paper's [0, 1]. Put input normalisation inside the model and attack
      in pixel space.
    options: one `AttackOptions` (c search and solver).
    label: (B,) labels the untargeted attack moves away from; default the
      model's prediction on x.
    untargeted: with target=None: 'all' (the closest adversarial example over
      the other labels: one joint search on 'any label but l' by default;
      `options.joint=False`: the `screen` nearest labels, or all K−1 with
      screen=0 as in `PAPER`), 'logits' (the runner-up logit as target), or
      'random' (a random wrong label from `key`, the paper's protocol).
    key: PRNG key for untargeted='random'.

  Returns:
    AttackResult: x_adv (always in the box), r, success (re-checked by the
    model on x_adv), target, c, l2, distortion (per-pixel RMS of r), iterations,
    solves.

  Raises:
    ValueError: x not a batch, outside the box or not finite; bad bounds,
      targets, labels or options; the model's output not (B, K) or not finite.
  """
  check_untargeted(untargeted, key)
  p = prepare(model, x, bounds, options.check())
  x = np.asarray(x, np.float32)
  if len(x) == 0:
    return _empty(x, target)
  if target is not None:
    target = check_labels(target, len(x), p.num_classes, "target")
  if label is not None:
    label = check_labels(label, len(x), p.num_classes, "label")
  return solve_batch(p, jnp.asarray(x), target, label=label,
                     untargeted=untargeted, key=key)
