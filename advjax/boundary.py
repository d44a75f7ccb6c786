"""The decision boundary of the §4.1 attack: the success test and the steps that
end on the boundary.

* `lead`, `reaches`: a point counts as reaching l only if logit l leads every
  other by MARGIN (and the logits are finite), so float differences between
  evaluations cannot flip the final re-check of a point on the boundary. With
  `away=True` the goal is 'any label but l' (the joint untargeted attack).
* `polish`: shrinks r back to the boundary along itself (a root of the lead).
* `refine`: walks along the boundary towards x (the lead's gradient, then a
  root along the ray): the paper's D(x, l) = min ‖r‖ s.t. f(x + r) = l, more
  closely than the penalty's minimiser.
* `screen`: the labels nearest to x by DeepFool's linearised distance, for the
  untargeted attack.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from advjax import convgrad

# The search accepts a point only if the target's logit leads by this much, so
# that float differences between evaluations (batched vs single, fused vs not)
# cannot flip the final re-check of a point that sits on the decision boundary.
MARGIN = 1e-3


def ce(logits: jax.Array, l: jax.Array, away: bool = False) -> jax.Array:
  """Cross-entropy of the softmax for one example: loss_f(x, l) in §4.1
  (away: of the event 'any label but l', −log(1 − p_l), whose gradient does
  not vanish when p_l rounds to 1)."""
  if away:
    return jax.nn.logsumexp(logits) - jax.nn.logsumexp(logits.at[l].set(-jnp.inf))
  return jax.nn.logsumexp(logits) - logits[l]


def lead(logits: jax.Array, l: jax.Array, away: bool = False) -> jax.Array:
  """Per row: logits[l] minus the largest other logit (away: the largest other
  minus logits[l], the lead of 'any label but l'); −inf if not finite."""
  other = jnp.where(jax.nn.one_hot(l, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  m = jnp.take_along_axis(logits, l[..., None], -1)[..., 0] - other.max(-1)
  m = -m if away else m
  return jnp.where(jnp.all(jnp.isfinite(logits), -1), m, -jnp.inf)


def reaches(logits: jax.Array, l: jax.Array, away: bool = False) -> jax.Array:
  """Per row: finite logits, and logits[l] exceeds every other by MARGIN
  (away: some other logit exceeds logits[l] by MARGIN)."""
  return lead(logits, l, away) > MARGIN


def verdict(out: jax.Array, l: jax.Array, away: bool = False):
  """The final re-check on the returned points' logits: (success, argmax);
  success is argmax == l (away: != l) with finite logits, no margin."""
  pred = jnp.argmax(out, -1).astype(jnp.int32)
  return ((pred == l) != away) & jnp.all(jnp.isfinite(out), -1), pred


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


def above(out: jax.Array, l: jax.Array, away: bool = False) -> jax.Array:
  """`lead` minus 2·MARGIN, the level the roots aim at: >= 0 reaches l with
  room to spare."""
  return lead(out, l, away) - 2 * MARGIN


def level(logits, params, l, shape, away: bool = False):
  """F(v) = `above` at flat points v (B, n)."""
  return lambda v: above(logits(params, v.reshape((v.shape[0],) + shape)), l, away)


def polish(logits, params, x, z, l, shape, steps: int, f0, away: bool = False):
  """Shrinks each successful r = z − x towards x while z still reaches l.

  The penalty's minimiser overshoots the boundary (its margin is set by the CE
  level, not by MARGIN); a root of the lead along α in x + α·r (inside the
  box, which is convex) moves it back to the boundary along r: a smaller ‖r‖
  for the same target, whatever the precision of the c search. `f0` is
  `level` at x.
  """
  B = x.shape[0]
  at = level(logits, params, l, shape, away)
  F = lambda a: at(x + a[:, None] * (z - x))
  f1 = at(z)
  ok = (f1 >= 0) & (f0 < 0)
  a = _root(F, jnp.zeros(B), jnp.where(ok, f0, -1.), jnp.ones(B), jnp.where(ok, f1, 1.), steps)
  return jnp.where(ok[:, None], x + a[:, None] * (z - x), z)


def margin(apply, shape, away: bool = False):
  """`lead` of one flat z (> 0: z reaches l), to differentiate."""
  return lambda z, params, l: lead(apply(params, z.reshape(shape))[None], l[None], away)[0]


def refine(apply, logits, params, x, z, l, shape, lo, hi, steps: int,
            root_steps: int, f0, away: bool = False, eta: float = 0.5):
  """Walks each successful boundary point z towards x along the boundary.

  At z the boundary's tangent plane {g·(r' − r) = 0} (g the lead's gradient)
  has its smallest r' at (g·r / ‖g‖²)·g; a step η of the way there shortens
  r, and a root of the lead along x + α·r', α ∈ [0, 1.5], puts the point back
  on the boundary. A step that does not shorten r is refused and η halves.
  The result solves the paper's D(x, l) = min ‖r‖ s.t. f(x + r) = l more
  closely than the penalty's minimiser. `f0` is `level` at x.
  """
  B = x.shape[0]
  grad = jax.vmap(jax.grad(margin(apply, shape, away)), in_axes=(0, None, 0))
  F = level(logits, params, l, shape, away)
  # z counts as on the target side at MARGIN; roots aim at 2·MARGIN, so that a
  # point found by a root is still accepted when evaluated again elsewhere.
  ok0 = F(z) >= -MARGIN
  col = lambda v: v[:, None]

  def step(_, c):
    z, eta = c
    r, g = z - x, grad(z, params, l)
    rp = col(jnp.sum(g * r, -1) / jnp.maximum(jnp.sum(g * g, -1), 1e-30)) * g
    rc = jnp.clip(x + (1 - col(eta)) * r + col(eta) * rp, lo, hi) - x
    path = lambda a: jnp.clip(x + col(a) * rc, lo, hi)
    top = jnp.full(B, 1.5)
    ftop = F(path(top))
    good = ok0 & (ftop >= 0) & (f0 < 0)
    a = _root(lambda a: F(path(a)), jnp.zeros(B), jnp.where(good, f0, -1.), top,
              jnp.where(good, ftop, 1.), root_steps)
    zn = path(a)
    better = good & (jnp.sum((zn - x) ** 2, -1) < jnp.sum(r * r, -1))
    return jnp.where(col(better), zn, z), jnp.where(better, eta, eta / 2)

  z, _ = jax.lax.fori_loop(0, steps, step, (z, jnp.full(B, eta)))
  return z


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def screen(apply, K: int, n: int, params, x, label):
  """(B, n) labels ≠ label nearest to x by the linearised distance (DeepFool's).

  d_k = (z_label − z_k) / ‖∇(z_label − z_k)‖ at x; gradients are taken for the
  4n highest other logits only, so a model of 1,000 classes costs 4n passes.
  """
  m = min(K - 1, 4 * n)
  apply = convgrad.canonical(apply)
  def one(xi, li):
    z = apply(params, xi)
    cand = jax.lax.top_k(jnp.where(jnp.arange(K) == li, -jnp.inf, z), m)[1]
    gap = lambda v, k: (lambda o: o[li] - o[k])(apply(params, v))
    g = jax.vmap(jax.grad(gap), in_axes=(None, 0))(xi, cand)
    d = (z[li] - z[cand]) / jnp.maximum(
        jnp.sqrt(jnp.sum(g.reshape(m, -1) ** 2, -1)), 1e-30)
    return cand[jnp.argsort(d)[:n]].astype(jnp.int32)
  return jax.vmap(one)(x, label)
