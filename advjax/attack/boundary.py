"""The decision boundary of the §4.1 attack: the steps that end on it.

A point counts as reaching l when its lead exceeds the per-example margin m
(`advjax.criteria`, the only definition); roots aim at 2·m so that a point
found by a root still reaches l when evaluated again elsewhere.

* `polish`: shrinks r back to the boundary along itself (a root of the lead).
* `refine`: walks along the boundary towards x (the lead's gradient, then a
  root along the ray): the paper's D(x, l) = min ‖r‖ s.t. f(x + r) = l, more
  closely than the penalty's minimiser.
* `closer`: per lane, the closer of two candidate points that reach l.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from advjax import criteria
from advjax.attack.lanes import Lanes


def _root(F, a, fa, b, fb, steps: int):
  """Per lane, b with F(b) >= 0 next to the root of F in [a, b] (F(a) < 0 <= F(b)).

  Regula falsi with the Illinois rule (the end that stays put has its value
  halved), falling back to the midpoint when the secant leaves the bracket:
  a lead that is nearly linear along the ray converges in 2–3 evaluations
  where bisection needs 10 for 0.1% of α. One evaluation per step.
  """
  def body(_, c):
    a, fa, b, fb, side = c
    t = b - fb * (b - a) / (fb - fa)
    t = jnp.where(jnp.isfinite(t) & (t > a) & (t < b), t, (a + b) / 2)
    ft = F(t)
    up = ft >= 0  # t reaches: the new b
    fa = jnp.where(up & (side == 1), fa / 2, fa)
    fb = jnp.where(~up & (side == -1), fb / 2, fb)
    return (jnp.where(up, a, t), jnp.where(up, fa, jnp.where(jnp.isfinite(ft), ft, fa)),
            jnp.where(up, t, b), jnp.where(up, ft, fb), jnp.where(up, 1, -1))
  side = jnp.zeros(a.shape, jnp.int32)
  return jax.lax.fori_loop(0, steps, body, (a, fa, b, fb, side))[2]


def above(out: jax.Array, l: jax.Array, m, away: bool = False) -> jax.Array:
  """The lead minus 2·m, the level the roots aim at: >= 0 reaches l with room."""
  return criteria.lead(out, l, away) - 2 * m


def level(ln: Lanes):
  """F(v) = `above` at flat points v (B, n)."""
  return lambda v: above(ln.logits(v), ln.l, ln.m, ln.away)


def polish(ln: Lanes, z, steps: int, f0):
  """Shrinks each successful r = z − x towards x while z still reaches l.

  The penalty's minimiser overshoots the boundary (its margin is set by the CE
  level, not by the margin); a root of the lead along α in x + α·r (inside the
  box, which is convex) moves it back to the boundary along r: a smaller ‖r‖
  for the same target, whatever the precision of the c search. `f0` is
  `level` at x.
  """
  x, B = ln.x, ln.x.shape[0]
  at = level(ln)
  F = lambda a: at(x + a[:, None] * (z - x))
  f1 = at(z)
  ok = (f1 >= 0) & (f0 < 0)
  a = _root(F, jnp.zeros(B), jnp.where(ok, f0, -1.), jnp.ones(B), jnp.where(ok, f1, 1.), steps)
  return jnp.where(ok[:, None], x + a[:, None] * (z - x), z)


def lead_of(apply, shape, away: bool = False):
  """`criteria.lead` of one flat z (> m: z reaches l), to differentiate."""
  return lambda z, params, l: criteria.lead(apply(params, z.reshape(shape))[None], l[None],
                                            away)[0]


def refine(ln: Lanes, z, steps: int, root_steps: int, f0, eta: float = 0.5):
  """Walks each successful boundary point z towards x along the boundary.

  At z the boundary's tangent plane {g·(r' − r) = 0} (g the lead's gradient)
  has its smallest r' at (g·r / ‖g‖²)·g; a step η of the way there shortens
  r, and a root of the lead along x + α·r', α ∈ [0, 1.5], puts the point back
  on the boundary. A step that does not shorten r is refused and η halves.
  The result solves the paper's D(x, l) = min ‖r‖ s.t. f(x + r) = l more
  closely than the penalty's minimiser. `f0` is `level` at x.
  """
  x, lo, hi, B = ln.x, ln.lo, ln.hi, ln.x.shape[0]
  grad = jax.vmap(jax.grad(lead_of(ln.apply, ln.shape, ln.away)), in_axes=(0, None, 0))
  F = level(ln)
  ok0 = F(z) >= -ln.m  # z reaches l (lead >= m); the roots aim at 2·m
  col = lambda v: v[:, None]

  def step(_, c):
    z, eta = c
    r, g = z - x, grad(z, ln.params, ln.l)
    rp = col(jnp.sum(g * r, -1) / jnp.maximum(jnp.sum(g * g, -1), 1e-30)) * g
    rc = jnp.clip(x + (1 - col(eta)) * r + col(eta) * rp, lo, hi) - x
    path = lambda a: jnp.clip(x + col(a) * rc, lo, hi)
    top = jnp.full(B, 1.5)
    ftop = F(path(top))
    good = ok0 & (ftop >= 0) & (f0 < 0)
    a = _root(lambda a: F(path(a)), jnp.zeros(B), jnp.where(good, f0, -1.), top,
              jnp.where(good, ftop, 1.), root_steps)
    zn = path(a)
    better = criteria.prefer(True, criteria.l2(r), good, criteria.l2(zn - x))
    return jnp.where(col(better), zn, z), jnp.where(better, eta, eta / 2)

  z, _ = jax.lax.fori_loop(0, steps, step, (z, jnp.full(B, eta)))
  return z


def closer(ln: Lanes, a, b):
  """Per lane, b where it reaches l and a does not or b is closer to x; else a."""
  take = criteria.prefer(ln.reached(a), criteria.l2(a - ln.x), ln.reached(b),
                         criteria.l2(b - ln.x))
  return jnp.where(take[:, None], b, a)
