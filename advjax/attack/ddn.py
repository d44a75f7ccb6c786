"""Decoupled Direction and Norm (DDN; Rony et al., CVPR 2019), jitted.

A first-order minimum-ℓ2 attack: normalised gradient steps on the
cross-entropy, with the radius ε of r shrunk by (1 − γ) while x + r is
adversarial and grown by (1 + γ) while it is not; the best adversarial r is
kept. It is foolbox 3's `DDNAttack` step for step (tested against it): cosine
step sizes from 1 to 0.01, ε capped by the box's farthest corner.

advjax uses it as the §4.1 attack's first-order pass
(`AttackOptions.first_order`): its point, shrunk to the decision
boundary, competes with the c search's, and the closer one is walked along the
boundary (the paper's D(x, l) from the better start). `ddn` is public so that
the pass can be compared with the attack it is borrowed from.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from advjax import criteria, inputs
from advjax.attack.lanes import Lanes


class DDNResult(NamedTuple):
  """Per-example results of `ddn`; every field has leading dimension B.

  Attributes:
    x_adv: the best adversarial input found (x where none was), in the box.
    r: x_adv − x.
    success: argmax logits(x_adv) == target (targeted) or != label, with
      finite logits, re-checked.
    target: the label attacked (targeted) or the label reached (untargeted).
    l2: ‖r‖₂.
    distortion: the paper's per-pixel RMS of r.
    passes: model passes per example, forward and backward counted alike
      (the hardware-independent cost).
  """
  x_adv: jax.Array
  r: jax.Array
  success: jax.Array
  target: jax.Array
  l2: jax.Array
  distortion: jax.Array
  passes: jax.Array


def steps_lanes(ln: Lanes, opts: "DDNOptions", unit=1.0, temp=1.0):
  """DDN on the flat lanes `ln` towards ln.l (or, away, from it): the best z.

  Lanes where no adversarial point was met return x
  (a point whose logits are not all finite is never adversarial). `lo`, `hi`
  are flat (n,) or per lane (B, n); `unit` a scalar or per lane (B,).
  Away from l the steps descend −log(1 − p_l), whose gradient has the
  direction of CE(l)'s (foolbox ascends CE(l)) but does not vanish where p_l
  rounds to 1; foolbox steps in a random direction there. Step sizes fall
  from `alpha` to 0.01 along a cosine (foolbox: alpha = 1); they and the first
  radius are in units of `unit` (foolbox: 1, whatever the box).
  """
  x, l, lo, hi, away, B = ln.x, ln.l, ln.lo, ln.hi, ln.away, ln.x.shape[0]
  steps, gamma, alpha = opts.steps, opts.gamma, opts.alpha
  col = lambda v: v[:, None]

  def loss(z, li, ti):  # ascended: minus the CE of reaching l (away: of leaving l)
    out = ln.apply(ln.params, z.reshape(ln.shape))
    return -criteria.ce(out / ti, li, away), out
  vg = jax.vmap(jax.value_and_grad(loss, has_aux=True))
  temp = jnp.broadcast_to(jnp.asarray(temp, x.dtype), (B,))
  norm = criteria.l2
  worst = norm(jnp.maximum(x - lo, hi - x))
  unit = jnp.broadcast_to(jnp.asarray(unit, x.dtype), (B,))

  def body(i, c):
    delta, eps, best_l2, best = c
    a = unit * (0.01 + (alpha - 0.01) * (1 + jnp.cos(math.pi * i / steps)) / 2)
    (_, out), g = vg(x + delta, l, temp)
    g = g / col(jnp.maximum(norm(g), 1e-12))
    adv = criteria.verdict(out, l, away)[0]  # NaN logits: never adversarial
    l2 = norm(delta)
    both = adv & (l2 <= best_l2)
    best_l2 = jnp.where(both, l2, best_l2)
    best = jnp.where(col(both), delta, best)
    delta = delta + col(a) * g
    eps = jnp.minimum(eps * jnp.where(adv, 1 - gamma, 1 + gamma), worst)
    delta = delta * col(eps / jnp.maximum(norm(delta), 1e-12))
    delta = jnp.clip(x + delta, lo, hi) - x
    return delta, eps, best_l2, best

  zero = jnp.zeros_like(x)
  c = (zero, jnp.full((B,), opts.init_epsilon * unit, x.dtype), worst, zero)
  return x + jax.lax.fori_loop(0, steps, body, c)[3]


def box_unit(lo, hi):
  """The RMS width of the box over its finite coordinates, per lane for a
  per-example box (1 for [0, 1], 255 for [0, 255]; 1 if it has no width)."""
  w = jnp.where(jnp.isfinite(hi - lo), hi - lo, 0.0)
  rms = jnp.sqrt(jnp.sum(w * w, -1) / jnp.maximum(jnp.sum(w > 0, -1), 1))
  return jnp.where(rms > 0, rms, 1.0)


def flat_box(lo, hi, x):
  """lo, hi of one input's shape as flat (n,); per example (B, ...) as (B, n)."""
  f = (lambda a: a.reshape(len(x), -1)) if lo.ndim == x.ndim else (lambda a: a.reshape(-1))
  return f(lo), f(hi)


def batch(apply, opts: "DDNOptions", params, x, l, lo, hi, away: bool) -> DDNResult:
  """DDN on a validated batch x (B, ...) towards l (away: from l); jittable.

  `apply` is per example; lo, hi of one input's shape or (B, ...) per example.
  """
  B = x.shape[0]
  lo, hi = flat_box(lo, hi, x)
  z = steps_lanes(Lanes(apply, params, x.reshape(B, -1), l, x.shape[1:], lo, hi, away=away),
                  opts)
  x_adv = z.reshape(x.shape)
  success, pred = criteria.verdict(jax.vmap(apply, (None, 0))(params, x_adv), l, away)
  r = x_adv - x
  passes = jnp.full((B,), 2 * opts.steps + 1, jnp.int32)  # a gradient per step, a re-check
  return DDNResult(x_adv, r, success, jnp.where(success, pred, l) if away else l,
                   criteria.l2(r), criteria.rms(r), passes)


class DDNOptions(NamedTuple):
  """DDN's settings (foolbox's defaults; hashable: static under jit).

  Attributes:
    steps: gradient steps (foolbox's default, 100; within 0.7–2.2% of 1,000
      steps' mean distortion on the benchmark's conv net and MLP).
    gamma: the radius' factor per step.
    init_epsilon: the first radius.
    alpha: the first step size, cosine down to 0.01 (foolbox: 1; the attack's
      pass: `FirstOrder.alpha`).
  """
  steps: int = 100
  gamma: float = 0.05
  init_epsilon: float = 1.0
  alpha: float = 1.0

  def check(self) -> "DDNOptions":
    """These options, or ValueError naming the bad one."""
    inputs.integer(self.steps, "steps")
    for name, ok, need in (("gamma", 0 < self.gamma < 1, "in (0, 1)"),
                           ("init_epsilon", self.init_epsilon > 0, "> 0"),
                           ("alpha", self.alpha > 0, "> 0")):
      if not ok:
        raise ValueError(f"{name}={getattr(self, name)!r}: must be {need}.")
    return DDNOptions(int(self.steps), float(self.gamma), float(self.init_epsilon),
                      float(self.alpha))


batch_jit = jax.jit(batch, static_argnums=(0, 1, 7))


_D = DDNOptions()  # the defaults, written once (in DDNOptions)


def ddn(model: Any, x, target=None, *, bounds=inputs.BOX, steps: int = _D.steps,
        gamma: float = _D.gamma, init_epsilon: float = _D.init_epsilon,
        alpha: float = _D.alpha, label=None) -> DDNResult:
  """DDN (Rony et al. 2019), the first-order pass of the §4.1 attack's default.

  Args:
    model: any model `advjax.attack.lbfgs` takes (function, (apply_fn,
      params), Flax NNX, Equinox).
    x: inputs (B, ...) inside the box.
    target: (B,) labels to reach, or None: untargeted, away from `label`.
    bounds: (lo, hi) broadcastable to one input or to the batch (B, ...).
    steps, gamma, init_epsilon, alpha: as `DDNOptions` (foolbox's defaults).
    label: untargeted: the labels to leave (default the prediction on x).

  Returns:
    DDNResult; success is re-checked by the model on x_adv.

  Raises:
    ValueError: bad inputs, bounds, labels or steps (as `lbfgs`).
  """
  opts = DDNOptions(steps, gamma, init_epsilon, alpha).check()
  pb = inputs.problem(model, x, bounds, target=target, label=label)
  if pb.n == 0:
    return DDNResult(*inputs.empty_fields(pb, DDNResult._fields))
  away = target is None
  l = pb.target if not away else inputs.default_labels(pb)
  return batch_jit(pb.apply, opts, pb.params, jnp.asarray(pb.x), l, jnp.asarray(pb.lo),
                    jnp.asarray(pb.hi), away)
