"""The decision boundary of the §4.1 attack: the success test and the steps that
end on the boundary.

* `reaches`: a point counts as reaching l only if logit l leads every other by
  MARGIN (and the logits are finite), so float differences between evaluations
  cannot flip the final re-check of a point on the boundary.
* `polish`: shrinks r back to the boundary along itself (radial bisection).
* `refine`: walks along the boundary towards x (margin gradient, then a radial
  bisection): the paper's D(x, l) = min ‖r‖ s.t. f(x + r) = l, more closely than
  the penalty's minimiser.
* `screen`: the labels nearest to x by DeepFool's linearised distance, for the
  untargeted attack.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from advjax import adapt

# The search accepts a point only if the target's logit leads by this much, so
# that float differences between evaluations (batched vs single, fused vs not)
# cannot flip the final re-check of a point that sits on the decision boundary.
MARGIN = 1e-3


def reaches(logits: jax.Array, l: jax.Array) -> jax.Array:
  """Per row: finite logits, and logits[l] exceeds every other by MARGIN."""
  other = jnp.where(jax.nn.one_hot(l, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  lead = jnp.take_along_axis(logits, l[..., None], -1)[..., 0] > other.max(-1) + MARGIN
  return lead & jnp.all(jnp.isfinite(logits), -1)


def polish(logits, params, x, z, l, shape, steps: int):
  """Shrinks each successful r = z − x towards x while z still reaches l.

  The penalty's minimiser overshoots the boundary (its margin is set by the CE
  level, not by MARGIN); bisecting α in x + α·r (inside the box, which is
  convex) moves it back to the boundary along r: a smaller ‖r‖ for the same
  target, whatever the precision of the c search.
  """
  B = x.shape[0]
  ok = reaches(logits(params, z.reshape((B,) + shape)), l)
  a_lo, a_hi = jnp.zeros(B), jnp.ones(B)

  def body(_, c):
    a_lo, a_hi = c
    mid = (a_lo + a_hi) / 2
    hit = reaches(logits(params, (x + mid[:, None] * (z - x)).reshape((B,) + shape)), l)
    return jnp.where(hit, a_lo, mid), jnp.where(hit, mid, a_hi)

  _, a_hi = jax.lax.fori_loop(0, steps, body, (a_lo, a_hi))
  return jnp.where(ok[:, None], x + a_hi[:, None] * (z - x), z)


def margin(apply, shape):
  """logit l minus the largest other logit, of one flat z (> 0: z reaches l)."""
  def m(z, params, l):
    out = apply(params, z.reshape(shape))
    other = jnp.where(jax.nn.one_hot(l, out.shape[-1], dtype=bool), -jnp.inf, out)
    return out[l] - other.max()
  return m


def refine(apply, logits, params, x, z, l, shape, lo, hi, steps: int,
            bisect: int, eta: float = 0.5):
  """Walks each successful boundary point z towards x along the boundary.

  At z the boundary's tangent plane {g·(r' − r) = 0} (g the margin's
  gradient) has its smallest r' at (g·r / ‖g‖²)·g; a step η of the way there
  shortens r, and a radial bisection in x + α·r', α ∈ [0, 1.5], puts the point
  back on the boundary. A step that does not shorten r is refused and η halves.
  The result solves the paper's D(x, l) = min ‖r‖ s.t. f(x + r) = l more
  closely than the penalty's minimiser.
  """
  B = x.shape[0]
  grad = jax.vmap(jax.grad(margin(apply, shape)), in_axes=(0, None, 0))
  reach = lambda v: reaches(logits(params, v.reshape((B,) + shape)), l)
  ok0 = reach(z)
  col = lambda v: v[:, None]

  def step(_, c):
    z, eta = c
    r, g = z - x, grad(z, params, l)
    rp = col(jnp.sum(g * r, -1) / jnp.maximum(jnp.sum(g * g, -1), 1e-30)) * g
    rc = jnp.clip(x + (1 - col(eta)) * r + col(eta) * rp, lo, hi) - x
    path = lambda a: jnp.clip(x + col(a) * rc, lo, hi)
    top = reach(path(jnp.full(B, 1.5)))
    def bis(_, ab):
      a, b = ab
      mid = (a + b) / 2
      hit = reach(path(mid))
      return jnp.where(hit, a, mid), jnp.where(hit, mid, b)
    _, a = jax.lax.fori_loop(0, bisect, bis, (jnp.zeros(B), jnp.full(B, 1.5)))
    zn = path(a)
    better = ok0 & top & (jnp.sum((zn - x) ** 2, -1) < jnp.sum(r * r, -1))
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
  def one(xi, li):
    z = apply(params, xi)
    cand = jax.lax.top_k(jnp.where(jnp.arange(K) == li, -jnp.inf, z), m)[1]
    gap = lambda v, k: (lambda o: o[li] - o[k])(apply(params, v))
    g = jax.vmap(jax.grad(gap), in_axes=(None, 0))(xi, cand)
    d = (z[li] - z[cand]) / jnp.maximum(
        jnp.sqrt(jnp.sum(g.reshape(m, -1) ** 2, -1)), 1e-30)
    return cand[jnp.argsort(d)[:n]].astype(jnp.int32)
  return jax.vmap(one)(x, label)
