"""The only definitions of the §4.1 attack's criteria: loss, lead, success, distortion.

Every attack (`advjax.attack`, `advjax.attack.ddn`), the driver and the benchmark
call these; the scipy oracle (`advjax.reference`) deliberately writes its own.

* `ce`: loss_f(x, l) of §4.1, the softmax cross-entropy (away from l: of the
  event 'any label but l').
* `lead`: how far logit l leads every other (away: how far some other leads l).
* `margin`, `temperature`: the lead a search point needs to count as reaching
  l (so that float differences between evaluations, batched vs single, fused
  vs not, cannot flip the final re-check of a point on the boundary) and the
  loss's temperature. By default (scale 'spread') both are read in units in
  which the logits at x spread over SPREAD, so that a model whose logits are
  scaled by any factor is attacked alike; 'raw' reads the logits as they are
  (the paper's loss).
* `prediction`, `verdict`: the predicted label; the final re-check: argmax
  == l (away: != l) with finite logits.
* `l2`, `rms`: ‖r‖₂ and the paper's distortion, the per-pixel RMS ‖r‖₂/√m
  (jnp for JAX arrays, float64-exact numpy for host arrays);
* `prefer`: which of two points is the closer successful one.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# The margin in the logits' units ('raw': on logits whose spread max − min at
# x lies in [1, 1e3], every net of the paper; below 1 it shrinks with the
# spread, above 1e3 it grows with it: 1e-6 of the spread).
MARGIN = 1e-3
_REL_LARGE = 1e-6
# 'spread': the logits at x are read as if their spread were SPREAD, near the
# paper's nets' own (MNIST test images: FC100-100-10 median 28, conv 41), so
# the defaults change those nets little; the margin never falls below 2⁻¹⁷ of
# the largest |logit| (≈ 128 float32 ulps), for logits with a large offset.
SPREAD = 30.0
MARGIN_SPREAD = 1e-4
_ULPS = 2.0 ** -17
SCALES = ("spread", "raw")


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


def margin(logits_at_x: jax.Array, scale: str = "spread") -> jax.Array:
  """Per row: the lead that counts as reaching a label, from the logits at x.

  'spread': MARGIN·s/SPREAD for the spread s = max − min at x (at least 2⁻¹⁷
  of the largest |logit|): equivariant, so scaling the logits by any factor
  changes neither the decisions nor the attack's path. 'raw': MARGIN for s in
  [1, 1e3], MARGIN·s below, 1e-6·s above (advjax before session 7).
  """
  s = logits_at_x.max(-1) - logits_at_x.min(-1)
  if _scale(scale) == "spread":
    m = jnp.maximum(MARGIN_SPREAD / SPREAD * s, _ULPS * jnp.abs(logits_at_x).max(-1))
  else:
    m = jnp.maximum(MARGIN * jnp.minimum(s, 1.0), _REL_LARGE * s)
  return jnp.where(jnp.isfinite(m), m, MARGIN)


def temperature(logits_at_x: jax.Array, scale: str = "spread") -> jax.Array:
  """Per row: the temperature the losses divide the logits by.

  'spread': s/SPREAD, so the tempered logits spread over SPREAD at x whatever
  the model's unit (the CE, its gradients and the solvers' tolerances see the
  same numbers for f and 1e-4·f). 'raw': 1 (the paper's loss) for spreads of
  at least 1, the spread below. 1 where the spread is 0 or not finite.
  """
  s = logits_at_x.max(-1) - logits_at_x.min(-1)
  t = s / SPREAD if _scale(scale) == "spread" else jnp.minimum(s, 1.0)
  return jnp.where(jnp.isfinite(s) & (s > 0), t, 1.0)


def _scale(scale: str) -> str:
  if scale not in SCALES:
    raise ValueError(f"scale={scale!r}: must be one of {SCALES}.")
  return scale


def reaches(logits: jax.Array, l: jax.Array, m, away: bool = False) -> jax.Array:
  """Per row: finite logits, and the lead of l (away: of 'not l') exceeds m."""
  return lead(logits, l, away) > m


def prediction(logits: jax.Array) -> jax.Array:
  """The predicted labels (int32) of logits (B, K)."""
  return jnp.argmax(logits, -1).astype(jnp.int32)


def verdict(out: jax.Array, l: jax.Array, away: bool = False):
  """The final re-check on returned points' logits: (success, argmax); success
  is argmax == l (away: != l) with finite logits, no margin."""
  pred = prediction(out)
  return ((pred == l) != away) & jnp.all(jnp.isfinite(out), -1), pred


def l2(r: jax.Array) -> jax.Array:
  """‖r‖₂ per example of a batch r (B, ...): numpy in, numpy out (host
  figures, in r's precision), else jnp (inside jit)."""
  xp = np if isinstance(r, np.ndarray) else jnp
  return xp.sqrt(xp.sum(r.reshape(r.shape[0], -1) ** 2, -1))


def rms(r: jax.Array) -> jax.Array:
  """The paper's distortion per example: the per-pixel RMS ‖r‖₂ / √m (Tables 1–4)."""
  return per_pixel(l2(r), r.shape[1:])


def per_pixel(l2_norm, shape) -> jax.Array:
  """An L2 norm (or radius) in the paper's unit: ‖r‖₂ / √m for inputs of `shape`."""
  return l2_norm / math.sqrt(math.prod(shape))


def prefer(ok_a, d_a, ok_b, d_b):
  """Per example, whether b is the better point: b reaches its label and a
  does not, or both do and b is closer (d: distance to x); a on ties."""
  return ok_b & (jnp.logical_not(ok_a) | (d_b < d_a))
