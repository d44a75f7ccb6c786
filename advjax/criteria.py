"""The only definitions of the §4.1 attack's criteria: loss, lead, success, distortion.

Every attack (`advjax.attacks`, `advjax.ddn`), the driver and the benchmark
call these; the scipy oracle (`advjax.reference`) deliberately writes its own.

* `ce`: loss_f(x, l) of §4.1, the softmax cross-entropy (away from l: of the
  event 'any label but l').
* `lead`: how far logit l leads every other (away: how far some other leads l).
* `margin`: the lead a search point needs to count as reaching l, relative to
  the logits' scale at x, so that float differences between evaluations
  (batched vs single, fused vs not) cannot flip the final re-check of a point
  on the boundary, and a model whose logits are scaled by 1e-4 or 1e4 is
  attacked alike.
* `verdict`: the final re-check: argmax == l (away: != l) with finite logits.
* `l2`, `rms`: ‖r‖₂ and the paper's distortion, the per-pixel RMS ‖r‖₂/√m.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# The margin on logits whose spread (max − min) at x lies in [1, 1e3], every
# net of the paper; below 1 it shrinks with the spread, above 1e3 it grows
# with it (1e-6 of the spread: a few hundred float32 ulps of the largest logit).
MARGIN = 1e-3
_REL_LARGE = 1e-6


def ce(logits: jax.Array, l: jax.Array, away: bool = False) -> jax.Array:
  """Cross-entropy of the softmax for one example: loss_f(x, l) in §4.1
  (away: of the event 'any label but l', −log(1 − p_l), whose gradient does
  not vanish when p_l rounds to 1)."""
  if away:
    return jax.nn.logsumexp(logits) - jax.nn.logsumexp(logits.at[l].set(-jnp.inf))
  return jax.nn.logsumexp(logits) - logits[l]


def lead(logits: jax.Array, l: jax.Array, away: bool = False) -> jax.Array:
  """Per row: logits[l] minus the largest other logit (away: the largest other
  minus logits[l], the lead of 'any label but l'); −inf if not all finite."""
  other = jnp.where(jax.nn.one_hot(l, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  m = jnp.take_along_axis(logits, l[..., None], -1)[..., 0] - other.max(-1)
  m = -m if away else m
  return jnp.where(jnp.all(jnp.isfinite(logits), -1), m, -jnp.inf)


def margin(logits_at_x: jax.Array) -> jax.Array:
  """Per row: the lead that counts as reaching a label, from the logits at x.

  MARGIN for a spread s = max − min of the logits in [1, 1e3]; MARGIN·s below,
  1e-6·s above: scaling the logits scales the margin, so the decision (and
  the attack's path) does not depend on the logits' unit.
  """
  s = logits_at_x.max(-1) - logits_at_x.min(-1)
  m = jnp.maximum(MARGIN * jnp.minimum(s, 1.0), _REL_LARGE * s)
  return jnp.where(jnp.isfinite(m), m, MARGIN)


def temperature(logits_at_x: jax.Array) -> jax.Array:
  """Per row: the spread of the logits at x, capped at 1: the losses divide the
  logits by it, so that logits scaled by 1e-4 give the same (relative) CE and
  gradients as unscaled ones (and the solvers' absolute tolerances still bite);
  1 for every net of the paper, whose logits spread more."""
  s = logits_at_x.max(-1) - logits_at_x.min(-1)
  return jnp.where(jnp.isfinite(s) & (s > 0), jnp.minimum(s, 1.0), 1.0)


def reaches(logits: jax.Array, l: jax.Array, m, away: bool = False) -> jax.Array:
  """Per row: finite logits, and the lead of l (away: of 'not l') exceeds m."""
  return lead(logits, l, away) > m


def verdict(out: jax.Array, l: jax.Array, away: bool = False):
  """The final re-check on returned points' logits: (success, argmax); success
  is argmax == l (away: != l) with finite logits, no margin."""
  pred = jnp.argmax(out, -1).astype(jnp.int32)
  return ((pred == l) != away) & jnp.all(jnp.isfinite(out), -1), pred


def l2(r: jax.Array) -> jax.Array:
  """‖r‖₂ per example of a batch r (B, ...)."""
  return jnp.sqrt(jnp.sum(r.reshape(r.shape[0], -1) ** 2, -1))


def rms(r: jax.Array) -> jax.Array:
  """The paper's distortion per example: the per-pixel RMS ‖r‖₂ / √m (Tables 1–4)."""
  return per_pixel(l2(r), r.shape[1:])


def per_pixel(l2_norm, shape) -> jax.Array:
  """An L2 norm (or radius) in the paper's unit: ‖r‖₂ / √m for inputs of `shape`."""
  return l2_norm / math.sqrt(math.prod(shape))
