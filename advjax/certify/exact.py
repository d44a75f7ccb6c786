"""The exact minimal distortion of affine models inside the box (§4.1's FC10).

For logits affine in x, the margin to class j is m_j + a_j·r with a_j the row
∂(z_l − z_j)/∂x. The smallest ‖r‖₂ that brings it to 0 inside the box solves
min ‖r‖ s.t. (−a_j)·r ≥ m_j, lo ≤ x + r ≤ hi, a convex problem whose KKT point
is r(λ) = clip(λ(−a_j), lo − x, hi − x), λ ≥ 0 rising until the constraint
binds (`concretize.exact_distance`, a dual bound at every λ, run to
convergence). The untargeted minimum is the smallest over j ≠ l. The rows a_j
and margins m_j come from the same backward pass as CROWN's (on an affine
graph it meets no relaxation), so they are exact up to rounding.
"""

from __future__ import annotations

import jax.numpy as jnp

from advjax.certify import bounds, concretize, rounding
from advjax.certify.interpret import Graph


def check_affine(g: Graph, plan: bounds.Plan) -> None:
  """Raises ValueError unless the logits are affine in x (as the model runs:
  a rounding to a narrow float is not affine)."""
  where = rounding.first(g, plan)
  if where is not None:
    raise ValueError(
        f"method='exact' needs logits affine in x; the model rounds to {where}, "
        "which is not. Use 'crown' (it bounds each rounding) or run the model in float32.")
  for n, kind in zip(g.nodes, plan.kinds):
    if kind not in (None, "affine"):
      raise ValueError(
          f"method='exact' needs a model whose logits are affine in x; "
          f"primitive '{n.prim.name}' ({n.where}) is not affine. Use 'crown', "
          "'alpha-crown' or 'ibp'.")


def radius(c: bounds.Ctx, eps_box):
  """(certified radius, margin bound there, active-set steps) of one example."""
  lam_x, off, mag = bounds.pullback(c, {}, {}, c.g.out, c.C, False)
  K = lam_x.shape[0]
  a = lam_x.reshape(K, -1)
  x0 = c.x0.reshape(-1)
  tol = c.opts.slack
  val = a @ x0 + off
  m = val - tol * (mag + jnp.abs(a) @ jnp.abs(x0))  # margins, rounded down
  A, B = c.A.reshape(-1), c.B.reshape(-1)
  h, hmag, far, steps = concretize.exact_distance(-a, m, A, B, c.opts.exact_steps)
  d = jnp.sqrt(2 * jnp.maximum(h - tol * hmag, 0.0)) * (1 - tol)
  unreachable = far * (1 + tol) < m
  d = jnp.where(m <= 0, 0.0, jnp.where(unreachable, jnp.inf, d))
  label_row = jnp.all(c.C == 0, 1)
  r = jnp.minimum(jnp.min(jnp.where(label_row, jnp.inf, d)), eps_box)
  g, gm = concretize.ball_box(a, A, B, r, c.opts.concretize_steps)
  low = jnp.where(label_row, jnp.inf, m + g - tol * gm)
  return r, jnp.min(low), steps
