"""Decoupled Direction and Norm (DDN; Rony et al., CVPR 2019), jitted.

A first-order minimum-ℓ2 attack: normalised gradient steps on the
cross-entropy, with the radius ε of r shrunk by (1 − γ) while x + r is
adversarial and grown by (1 + γ) while it is not; the best adversarial r is
kept. It is foolbox 3's `DDNAttack` step for step (tested against it): cosine
step sizes from 1 to 0.01, ε capped by the box's farthest corner.

advjax uses it as the §4.1 attack's first-order pass
(`AttackOptions.first_order_steps`): its point, shrunk to the decision
boundary, competes with the c search's, and the closer one is walked along the
boundary (the paper's D(x, l) from the better start). `ddn` is public so that
the pass can be compared with the attack it is borrowed from.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from advjax import adapt, boundary, checks, convgrad


class DDNResult(NamedTuple):
  """Per-example results of `ddn`; every field has leading dimension B.

  Attributes:
    x_adv: the best adversarial input found (x where none was), in the box.
    r: x_adv − x.
    success: argmax logits(x_adv) == target (targeted) or != label, re-checked.
    target: the label attacked (targeted) or the label reached (untargeted).
    l2: ‖r‖₂.
    distortion: the paper's per-pixel RMS of r.
  """
  x_adv: jax.Array
  r: jax.Array
  success: jax.Array
  target: jax.Array
  l2: jax.Array
  distortion: jax.Array


def steps_lanes(apply, shape, steps: int, away: bool, params, x, l, lo, hi,
                gamma: float = 0.05, init_epsilon: float = 1.0, alpha: float = 1.0,
                unit=1.0):
  """DDN on flat lanes x (B, n) towards l (or, away, from l): the best z.

  `apply` is per example; lanes where no adversarial point was met return x.
  Away from l the steps descend −log(1 − p_l), whose gradient has the
  direction of CE(l)'s (foolbox ascends CE(l)) but does not vanish where p_l
  rounds to 1; foolbox steps in a random direction there. Step sizes fall
  from `alpha` to 0.01 along a cosine (foolbox: alpha = 1); they and the first
  radius are in units of `unit` (foolbox: 1, whatever the box).
  """
  B = x.shape[0]
  col = lambda v: v[:, None]

  def loss(z, li):  # ascended: minus the CE of reaching l (away: of leaving l)
    out = apply(params, z.reshape(shape))
    return -boundary.ce(out, li, away), out
  vg = jax.vmap(jax.value_and_grad(loss, has_aux=True))
  norm = lambda v: jnp.sqrt(jnp.sum(v * v, -1))
  worst = norm(jnp.maximum(x - lo, hi - x))

  def body(i, c):
    delta, eps, best_l2, best = c
    a = unit * (0.01 + (alpha - 0.01) * (1 + jnp.cos(math.pi * i / steps)) / 2)
    (_, out), g = vg(x + delta, l)
    g = g / col(jnp.maximum(norm(g), 1e-12))
    adv = (jnp.argmax(out, -1) == l) != away
    l2 = norm(delta)
    both = adv & (l2 <= best_l2)
    best_l2 = jnp.where(both, l2, best_l2)
    best = jnp.where(col(both), delta, best)
    delta = delta + a * g
    eps = jnp.minimum(eps * jnp.where(adv, 1 - gamma, 1 + gamma), worst)
    delta = delta * col(eps / jnp.maximum(norm(delta), 1e-12))
    delta = jnp.clip(x + delta, lo, hi) - x
    return delta, eps, best_l2, best

  zero = jnp.zeros_like(x)
  c = (zero, jnp.full((B,), init_epsilon * unit, x.dtype), worst, zero)
  return x + jax.lax.fori_loop(0, steps, body, c)[3]


def _ddn(apply, steps: int, gamma: float, init_epsilon: float, alpha: float, params, x,
         l, lo, hi, away: bool):
  B, shape = x.shape[0], x.shape[1:]
  apply = convgrad.canonical(apply)
  xf = x.reshape(B, -1)
  z = steps_lanes(apply, shape, steps, away, params, xf, l, lo.reshape(-1),
                  hi.reshape(-1), gamma, init_epsilon, alpha)
  x_adv = z.reshape(x.shape)
  success, pred = boundary.verdict(adapt.batched(apply)(params, x_adv), l, away)
  r = x_adv - x
  l2 = jnp.sqrt(jnp.sum(r.reshape(B, -1) ** 2, -1))
  return DDNResult(x_adv, r, success, jnp.where(success, pred, l) if away else l,
                   l2, l2 / math.sqrt(xf.shape[1]))


_ddn_jit = jax.jit(_ddn, static_argnums=(0, 1, 2, 3, 4, 10))


def ddn(model: Any, x, target=None, *, bounds=(0.0, 1.0), steps: int = 100,
        gamma: float = 0.05, init_epsilon: float = 1.0, alpha: float = 1.0,
        label=None) -> DDNResult:
  """DDN (Rony et al. 2019), the first-order pass of the §4.1 attack's default.

  Args:
    model: any model `advjax.attacks.lbfgs` takes (function, (apply_fn,
      params), Flax NNX, Equinox).
    x: inputs (B, ...) inside the box.
    target: (B,) labels to reach, or None: untargeted, away from `label`.
    bounds: (lo, hi) broadcastable to one input.
    steps: gradient steps (foolbox's default, 100; within 0.7–2.2% of 1,000
      steps' mean distortion on the benchmark's conv net and MLP).
    gamma: the radius' factor per step.
    init_epsilon: the first radius.
    alpha: the first step size, cosine down to 0.01 (foolbox: 1; the attack's
      pass: `AttackOptions.first_order_alpha`).
    label: untargeted: the labels to leave (default the prediction on x).

  Returns:
    DDNResult; success is re-checked by the model on x_adv.

  Raises:
    ValueError: bad inputs, bounds, labels or steps (as `lbfgs`).
  """
  if not (isinstance(steps, (int, np.integer)) and steps >= 1):
    raise ValueError(f"steps={steps!r}: must be an integer >= 1.")
  if not (0 < gamma < 1 and init_epsilon > 0 and alpha > 0):
    raise ValueError(f"gamma={gamma!r}, init_epsilon={init_epsilon!r}, alpha={alpha!r}: "
                     "need 0 < gamma < 1, init_epsilon > 0 and alpha > 0.")
  p = checks.prepare(model, x, bounds, None)
  x = jnp.asarray(np.asarray(x, np.float32))
  B, K = x.shape[0], p.num_classes
  away = target is None
  if away:
    l = (checks.check_labels(label, B, K, "label") if label is not None else
         jnp.argmax(adapt.logits(p.apply, p.params, x), -1).astype(jnp.int32))
  else:
    l = checks.check_labels(target, B, K, "target")
  return _ddn_jit(p.apply, int(steps), float(gamma), float(init_epsilon), float(alpha),
                  p.params, x, l, jnp.asarray(p.lo), jnp.asarray(p.hi), away)
