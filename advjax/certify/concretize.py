"""Lower bounds of a·r over the L2 ball intersected with the box, by duality.

The input set of a certificate at radius ε around x₀ is
R = {r : ‖r‖₂ ≤ ε, A ≤ r ≤ B} with A = lo − x₀ ≤ 0 ≤ B = hi − x₀.
For any μ ≥ 0 weak duality gives

    min_{r∈R} a·r ≥ g(μ) = Σ_i min_{A_i≤r_i≤B_i} (a_i r_i + μ r_i²) − μ ε²,

each term minimised at r_i = clip(−a_i/(2μ), A_i, B_i) (the KKT form). g is a
lower bound at *every* μ, so the search for the best μ only costs tightness,
never soundness. The search is an active-set (Newton) step on the norm:
with the saturated coordinates fixed, ‖r‖² = C + D/(4μ²) is solved for ε²;
coordinates only saturate as μ falls, so the steps never overshoot the
optimal μ* and g rises monotonically from the ball-only point μ₀ = ‖a‖/(2ε)
(where g(μ₀) ≥ −ε‖a‖, the bound that ignores the box). μ = 0 is the box-only
bound, reached when the box's own minimiser lies inside the ball.

`exact_distance` solves the other problem of the affine case (the smallest
‖r‖ in the box with a·r ≥ m) the same way: any dual λ is a lower bound.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def ball(a, eps):
  """min over ‖r‖ ≤ ε of a·r = −ε‖a‖ (the box ignored): (value, magnitude).

  ‖a‖ by `optax.safe_norm`: the same value, and a zero (not NaN) gradient at a
  zero row (the label's own row; α-CROWN differentiates through this)."""
  v = eps * optax.safe_norm(a, 0.0, axis=-1)
  return -v, v


def _g(aa, cap, mu, eps):
  """The dual value g(μ) for |a| = aa, caps = how far each r_i may go against
  a_i, and its magnitude (the sum of the absolute terms)."""
  m = mu[..., None]
  q = jnp.where(m > 0, jnp.minimum(aa / (2 * jnp.where(m > 0, m, 1.0)), cap), cap)
  q = jnp.where(aa > 0, q, 0.0)  # a_i = 0: r_i = 0 (also for infinite caps)
  lin, quad = jnp.sum(aa * q, -1), mu * jnp.sum(q * q, -1)
  return -lin + quad - mu * eps * eps, lin + quad + mu * eps * eps


def ball_box(a, A, B, eps, steps: int = 8):
  """Lower bound of min a·r over {‖r‖₂ ≤ ε, A ≤ r ≤ B}: (value, magnitude).

  a (S, m), A, B (m,), ε scalar. `steps` active-set steps on μ (see the
  module doc); the value is g at the last μ, a valid bound whatever `steps`.
  """
  aa = jnp.abs(a)
  cap = jnp.where(a > 0, -A, B)  # r_i moves against a_i, at most to the box
  e2 = eps * eps
  mu0 = jnp.sqrt(jnp.sum(aa * aa, -1)) / (2 * jnp.where(eps > 0, eps, 1.0))

  def step(_, mu):
    sat = (aa >= 2 * mu[:, None] * cap) & (aa > 0)
    c = jnp.sum(jnp.where(sat, cap * cap, 0.0), -1)
    d = jnp.sum(jnp.where(sat, 0.0, aa * aa), -1)
    room = e2 - c
    new = jnp.sqrt(d / (4 * jnp.where(room > 0, room, 1.0)))
    return jnp.where(d <= 0, 0.0, jnp.where(room > 0, new, mu))

  mu = jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, step, mu0))
  val, mag = _g(aa, cap, mu, eps)
  zero = eps <= 0  # R = {0}
  return jnp.where(zero, 0.0, val), jnp.where(zero, 0.0, mag)


def exact_distance(a, m, A, B, max_steps: int):
  """Lower bound on min{‖r‖₂ : a·r ≥ m, A ≤ r ≤ B} per row.

  Returns (h, |terms| of h, max of a·r over the box, steps) with ½d² ≥ h.

  Dual of ½‖r‖²: h(λ) = Σ_i min_{r_i} (½r_i² − λa_i r_i) + λm ≤ ½ d² for every
  λ ≥ 0, minimised at r_i = clip(λa_i, A_i, B_i). a·r(λ) is concave and
  rising in λ; active-set steps λ ← (m − S_sat)/D_free start at the ball point
  m/‖a‖² and rise to λ* without overshooting (finitely many: each adds a
  saturated coordinate), run until no lane moves. Rows with m ≤ 0 give 0;
  rows that cannot reach m inside the box give +∞.
  """
  aa = jnp.abs(a)
  cap = jnp.where(a > 0, B, -A)  # r_i moves with a_i
  far = jnp.sum(jnp.where(aa > 0, aa * cap, 0.0), -1)  # max of a·r over the box
  lam0 = m / jnp.maximum(jnp.sum(aa * aa, -1), jnp.finfo(a.dtype).tiny)

  def step(c):
    lam, _, k = c
    sat = (lam[:, None] * aa >= cap) & (aa > 0)
    s = jnp.sum(jnp.where(sat, aa * cap, 0.0), -1)
    d = jnp.sum(jnp.where(sat, 0.0, aa * aa), -1)
    new = jnp.where(d > 0, (m - s) / jnp.where(d > 0, d, 1.0), lam)
    new = jnp.maximum(new, lam)  # monotone (guards rounding)
    return new, jnp.any(new > lam), k + 1

  lam, _, k = jax.lax.while_loop(lambda c: c[1] & (c[2] < max_steps), step,
                                 (lam0, jnp.array(True), jnp.array(0)))
  q = jnp.where(aa > 0, jnp.minimum(lam[:, None] * aa, cap), 0.0)
  half, lin = 0.5 * jnp.sum(q * q, -1), lam * jnp.sum(aa * q, -1)
  h = half - lin + lam * m
  mag = half + lin + lam * jnp.abs(m)
  return h, mag, far, k
