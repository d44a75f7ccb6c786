"""The box-constrained L-BFGS attack of Szegedy et al. §4.1, batched.

The paper's problem is D(x, l) = argmin ‖r‖₂ s.t. f(x+r) = l, x+r in the box,
approximated by minimising c·|r| + loss_f(x+r, l) over the box and searching c.
Formulation used here (BUILD_NOTES.md, "The attack"):

    minimise over z = x + r ∈ [lo, hi]^m:   c·‖z − x‖₂² + CE(logits(z), l)

* c sits on the norm term, as in the paper, so the minimum distortion comes
  from the LARGEST c whose minimiser still reaches l (`advjax.attack.search`).
* The squared norm keeps the objective smooth at r = 0, where every solve
  starts; the c search scans the same (‖r‖, CE) trade-off curve either way.
* Reaching l needs a lead of the margin (`advjax.criteria`) in the search;
  `success` is the argmax on the returned x_adv, with finite logits.
* By default (not in `PAPER`) a first-order pass (`advjax.attack.ddn`) runs
  from x beside the search; of the two points, each shrunk to the decision
  boundary, the closer is walked along the boundary towards x.

`attack` lists the stages in order; `lbfgs` is the public entry on any model.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from advjax import adapt, criteria, inputs
from advjax.attack import boundary, ddn, search, targets
from advjax.attack.lanes import Lanes
from advjax.attack.options import AttackOptions


class AttackResult(NamedTuple):
  """Per-example results; every field has leading dimension B.

  Attributes:
    x_adv: adversarial inputs, always inside the box.
    r: x_adv − x.
    success: argmax logits(x_adv) == target with finite logits, re-checked.
    target: the label attacked (untargeted: the label reached).
    c: the norm weight of the returned point (inf: x was already the target;
      0: no success was found).
    l2: ‖r‖₂.
    distortion: the paper's per-pixel RMS, sqrt(mean(r²)) (Tables 1–4).
    iterations: inner L-BFGS iterations, summed over all solves.
    solves: number of L-BFGS solves (c values tried).
    passes: model passes per example, forward and backward counted alike (a
      gradient is two): the hardware-independent cost.
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
  passes: jax.Array


def attack(apply, opts: AttackOptions, away: bool, params, x, target, lo, hi) -> AttackResult:
  """The batched attack on validated inputs: towards `target`, or (away) to any
  label but `target`, the returned target being the one reached. Its stages:

  1. the logits at x: lanes already at the target are done (r = 0), and the
     per-example margin (`criteria.margin`) is set;
  2. the c search (`search`), its minimiser shrunk to the boundary (`polish`);
  3. the first-order pass from x, shrunk the same way; the closer point goes on;
  4. the walk along the boundary towards x (`refine`);
  5. the final re-check by the model (`criteria.verdict`).
  """
  B = x.shape[0]
  lo, hi = ddn.flat_box(lo, hi, x)
  out0 = adapt.batched(apply)(params, x)  # 1.
  done = criteria.verdict(out0, target, away)[0]
  m = criteria.margin(out0, opts.search.scale)
  ln = Lanes(apply, params, x.reshape(B, -1), target, x.shape[1:], lo, hi, m, away)
  f0 = boundary.above(out0, target, m, away)
  t = criteria.temperature(out0, opts.search.scale)
  z, c, s = _search(ln, opts, t, done)  # 2.
  z = jnp.clip(z, lo, hi)
  b, roots = opts.boundary, opts.boundary.root_steps
  if b.polish_steps:
    z = boundary.polish(ln, z, b.polish_steps, f0)
  if opts.first_order is not None:  # 3.
    zw = boundary.polish(ln, _first_order(ln, opts, t, out0.shape[-1]), roots, f0)
    z = jnp.where(done[:, None], ln.x, boundary.closer(ln, z, zw))
  if b.refine_steps:  # 4.
    z = boundary.refine(ln, z, b.refine_steps, roots, f0)
  x_adv = z.reshape(x.shape)  # 5.
  out = ln.logits(z)
  success, pred = criteria.verdict(out, target, away)
  if away:  # the label reached (or, on failure, the runner-up)
    target = jnp.where(success, pred, criteria.prediction(
        out.at[jnp.arange(B), target].set(-jnp.inf)))
  r = x_adv - x
  return AttackResult(x_adv, r, success, target, c, criteria.l2(r), criteria.rms(r),
                      s.iters, s.solves, _passes(opts, away, out0.shape[-1], s))


def _search(ln: Lanes, opts: AttackOptions, t, done):
  """Stage 2: the c search over the flat lanes, to its end: (z, c, state)."""
  solve = search.solver(search.penalty(ln.apply, ln.shape, ln.away), opts.solve, ln.lo,
                        ln.hi, t)
  s = search.init(opts.search, ln.x, done)
  step = lambda s: search.step(s, solve, ln, opts.search)
  s = jax.lax.while_loop(lambda s: ~search.done(s), step, s)
  z, c = search.result(s)
  return z, c, s


def _first_order(ln: Lanes, opts: AttackOptions, t, K: int):
  """Stage 3: DDN's point (flat lanes) towards target; away from it, towards
  the label nearest to x by the linearised distance: targeted DDN there ends
  closer than DDN away from l (conv net 2.0%, MLP 0.3%; BUILD_NOTES.md)."""
  fo = opts.first_order
  target = ln.l
  if ln.away:
    x = ln.x.reshape((ln.x.shape[0],) + ln.shape)
    target = targets.screen(ln.apply, K, 1, ln.params, x, ln.l, ln.lo, ln.hi)[:, 0]
  unit = ddn.box_unit(ln.lo, ln.hi) if fo.unit == "box" else 1.0
  steps = ddn.DDNOptions(fo.steps, fo.gamma, ddn.DDNOptions().init_epsilon, fo.alpha)
  return ddn.steps_lanes(ln.toward(target), steps, unit=unit, temp=t)


def _passes(opts: AttackOptions, away: bool, K: int, s: search.State) -> jax.Array:
  """Model passes per example (forward and backward alike), stage by stage."""
  b, n = opts.boundary, 2  # the logits at x; the final re-check
  n += 2 * s.evals + s.solves  # each objective evaluation a gradient; each reach test
  n += (1 + b.polish_steps) if b.polish_steps else 0
  if opts.first_order is not None:
    fo = opts.first_order
    n += (1 + targets.screened(K, 1)) if away else 0  # screening: a forward, a backward each
    n += 2 * fo.steps + 1 + b.root_steps + 2  # DDN, its shrink, `closer`
  if b.refine_steps:
    n += 1 + b.refine_steps * (3 + b.root_steps)
  return n.astype(jnp.int32)


_attack_jit = jax.jit(attack, static_argnums=(0, 1, 2))


@jax.jit
def _best_of(a: AttackResult, b: AttackResult) -> AttackResult:
  """Per example, the successful result with the smaller ‖r‖ (a on ties)."""
  take_b = criteria.prefer(a.success, a.l2, b.success, b.l2) | (
      ~a.success & ~b.success & (b.l2 < a.l2))  # of two failures, the closer
  pick = lambda u, v: jnp.where(take_b.reshape((-1,) + (1,) * (u.ndim - 1)), v, u)
  out = jax.tree_util.tree_map(pick, a, b)
  return out._replace(iterations=a.iterations + b.iterations,
                      solves=a.solves + b.solves, passes=a.passes + b.passes)


def solve_batch(apply, params, K: int, options: AttackOptions, x, lo, hi, target=None,
                label=None, untargeted: str = "all", key=None) -> AttackResult:
  """The attack on an already validated batch (`advjax.inputs.problem`).

  Only jitted jax operations touch x, the box, target and label, so they may be
  global arrays that span several processes (`advjax.runs.driver`).
  """
  run = lambda t, away: _attack_jit(apply, options, away, params, x, t, lo, hi)
  if target is not None:
    return run(target, False)
  mode = "logits" if untargeted == "all" else untargeted
  label, t = targets.untargeted(apply, K, mode, params, x, label, key)
  if untargeted != "all":
    return run(t, False)
  if options.untargeted.joint:  # one search on 'any label but label'
    return run(label, True)
  n = options.untargeted.screen
  cands = None if not n or n >= K - 1 else targets.screen(
      apply, K, n, params, x, label, *ddn.flat_box(lo, hi, x))
  best = None
  for k in range(1, K) if cands is None else range(n):  # the closest over targets
    res = run(targets.shift(label, k, K) if cands is None else cands[:, k], False)
    best = res if best is None else _best_of(best, res)
  if cands is not None:  # the screen's logits and gradients
    best = best._replace(passes=best.passes + 1 + targets.screened(K, n))
  return best


def lbfgs(model: Any, x, target=None, *, bounds=inputs.BOX,
          options: AttackOptions = AttackOptions(), label=None,
          untargeted: str = "all", key: jax.Array | None = None) -> AttackResult:
  """The box-constrained L-BFGS attack (Szegedy et al. §4.1) on a batch.

  For each example minimises c·‖r‖₂² + CE(logits(x+r), l) over x+r in the box
  with box-constrained L-BFGS, searching c per example and keeping the smallest
  successful r (by default also beside a first-order DDN pass, then walked
  along the decision boundary: `AttackOptions`). Examples already classified
  as their target return r = 0 without a solve. Compiled once per (model
  computation, input shape, options); the weights and the box are arguments.

  Args:
    model: a function f(x (B, ...)) -> logits (B, K); a pair (apply_fn,
      params) with apply_fn(params, x) -> (B, K) (Flax linen, Haiku, advjax
      `Model.apply`); a Flax NNX module (batched); an Equinox module (called
      on one example). It must be in evaluation mode (batch-independent).
    x: inputs (B, ...) inside the box.
    target: (B,) int labels in [0, K), or None for an untargeted attack.
    bounds: (lo, hi), scalars or arrays broadcastable to one input or to the
      batch (B, ...) (a box per example); default the paper's [0, 1]. Put input
      normalisation inside the model and attack in pixel space.
    options: one `AttackOptions`.
    label: (B,) labels the untargeted attack moves away from; default the
      model's prediction on x.
    untargeted: with target=None: 'all' (the closest adversarial example over
      the other labels: one joint search on 'any label but l' by default;
      `Untargeted(joint=False)`: the `screen` nearest labels, or all K−1 with
      screen=0 as in `PAPER`), 'logits' (the runner-up logit as target), or
      'random' (a random wrong label from `key`, the paper's protocol).
    key: PRNG key for untargeted='random'.

  Returns:
    AttackResult: x_adv (always in the box), r, success (re-checked by the
    model on x_adv), target, c, l2, distortion (per-pixel RMS of r),
    iterations, solves, passes.

  Raises:
    ValueError: one line naming a bad input, box, target, label, option or key,
      or a model that fails, is batch-dependent or gives non-finite logits.
  """
  options = checked_options(options)
  targets.check_mode(untargeted, key)
  inputs.key_of(key)
  pb = inputs.problem(model, x, bounds, target=target, label=label)
  if pb.n == 0:
    return AttackResult(*inputs.empty_fields(pb, AttackResult._fields))
  return solve_batch(pb.apply, pb.params, pb.num_classes, options, jnp.asarray(pb.x),
                     jnp.asarray(pb.lo), jnp.asarray(pb.hi), pb.target, pb.label,
                     untargeted, key)


def checked_options(options) -> AttackOptions:
  """The options checked, or ValueError saying what to pass."""
  if not isinstance(options, AttackOptions):
    raise ValueError(f"options={options!r} is not an AttackOptions; pass e.g. "
                     "options=AttackOptions(bisect_steps=6) or attack.PAPER.")
  return options.check()

