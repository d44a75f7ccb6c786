"""max(a, b) and min(a, b) of two x-dependent operands (MinMax / GroupSort-2).

GroupSort-2 (Anil et al. 2019; GloRo's MinMax) sorts each pair of units:
(min(a, b), max(a, b)). With a ∈ [la, ua], b ∈ [lb, ub]:

  * if la ≥ ub, max = a exactly (and min = b); if lb ≥ ua, the reverse;
  * otherwise max(a, b) = b + relu(d), d = a − b ∈ [la − ub, ua − lb] =: [l, u]
    (l < 0 < u), so the ReLU's lines give
      above: max ≤ b + s·(d − l), s = u / (u − l)   (the chord),
      below: max ≥ b + α·d, α = 1 if u ≥ −l else 0 (CROWN's adaptive slope:
             the larger of a and b by their bounds);
  * min(a, b) = a + b − max(a, b): its lower line is a + b − max's upper
    line, its upper line a + b − max's lower line.

Each line is c_a·a + c_b·b + c₀; the offsets are moved outward by the
relative slack of `relax.widen`. This is the rule of auto_LiRPA's and
DeepPoly's max of two variables (sound for any α ∈ [0, 1]).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class PairLines(NamedTuple):
  """lo: (c_a, c_b, c₀) of a line below y; up: of a line above."""
  lo: tuple
  up: tuple


def _max_lines(la, ua, lb, ub):
  a_wins, b_wins = la >= ub, lb >= ua
  l, u = la - ub, ua - lb
  mixed = ~a_wins & ~b_wins
  s = jnp.where(mixed, u / jnp.where(mixed, u - l, 1.0), 0.0)
  alpha = (u >= -l).astype(la.dtype)
  one, zero = jnp.ones_like(la), jnp.zeros_like(la)
  pick = lambda a, b, m: jnp.where(a_wins, a, jnp.where(b_wins, b, m))
  up = (pick(one, zero, s), pick(zero, one, 1 - s), pick(zero, zero, -s * l))
  lo = (pick(one, zero, alpha), pick(zero, one, 1 - alpha), zero)
  return PairLines(lo, up)


def lines(name: str, la, ua, lb, ub, tol: float) -> PairLines:
  """The widened lines of max(a, b) ('max') or min(a, b) ('min')."""
  m = _max_lines(la, ua, lb, ub)
  if name == "min":  # a + b − max
    flip = lambda t: (1 - t[0], 1 - t[1], -t[2])
    m = PairLines(flip(m.up), flip(m.lo))
  wa, wb = jnp.abs(la) + jnp.abs(ua), jnp.abs(lb) + jnp.abs(ub)
  tiny = jnp.finfo(la.dtype).tiny
  slack = lambda t: tol * (jnp.abs(t[0]) * wa + jnp.abs(t[1]) * wb + jnp.abs(t[2])) + tiny
  return PairLines(m.lo[:2] + (m.lo[2] - slack(m.lo),), m.up[:2] + (m.up[2] + slack(m.up),))


def interval(name: str, la, ua, lb, ub):
  """(l, u) of max(a, b) or min(a, b): exact from the operands' bounds."""
  f = jnp.maximum if name == "max" else jnp.minimum
  return f(la, lb), f(ua, ub)


def pull(lam, ln: PairLines):
  """Λ through y = max/min(a, b), lower bound of Λ·y: (Λ_a, Λ_b, offset, |offset|)."""
  pos, neg = jnp.maximum(lam, 0), jnp.minimum(lam, 0)
  lam_a = pos * ln.lo[0] + neg * ln.up[0]
  lam_b = pos * ln.lo[1] + neg * ln.up[1]
  t = pos * ln.lo[2] + neg * ln.up[2]
  axes = tuple(range(1, lam.ndim))
  return lam_a, lam_b, jnp.sum(t, axes), jnp.sum(jnp.abs(t), axes)
