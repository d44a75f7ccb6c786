"""α-CROWN: the ReLUs' lower slopes optimised by gradient (Xu et al., ICLR 2021),
and the max-pool windows' upper lines with them.

Any slope α ∈ [0, 1] gives a valid lower line of an unstable ReLU, and any
weights in [0, 1] a valid upper line of an undominated max-pool window (a
convex mix of DeepPoly's constant and two linear lines, `pool.upper_lines`),
so every choice gives sound bounds. Starting from CROWN's adaptive slopes and
DeepPoly's pool lines, a few Adam steps (optax) maximise Σ_j min(bound_j, 0),
the part of the margins not yet certified. One α per unit, shared by all margins and by every
backward pass (auto_LiRPA's `share_alphas`; Xu et al. keep one per unit and
start node). With `alpha_scope='all'` (the default) the slopes enter every
pass: an intermediate layer's bounds are recomputed from them at each step,
so they are optimised jointly for the output, as α-CROWN does, at the cost of
the whole forward pass per step; 'output' keeps the intermediate layers'
CROWN bounds and puts α in the output's pass only (one backward pass per
step). The result per margin is the largest bound over all iterates (each is
sound), so it is never below CROWN's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from advjax.certify import bounds


def margins(c: bounds.Ctx, eps):
  """Lower bounds of the margins at radius ε with optimised ReLU slopes."""
  iv, rl, slopes = bounds.forward(c, eps)
  low0 = bounds.final(c, iv, rl, eps)
  if not slopes or c.opts.alpha_steps == 0:
    return low0

  def low(a):
    if c.opts.alpha_scope == "all":  # every pass, the intermediate bounds' too
      iv_a, rl_a, _ = bounds.forward(c, eps, a)
      return bounds.final(c, iv_a, rl_a, eps, fold=False)
    lines = {k: bounds.relaxation(c, k, iv, a[k])[0] for k in a}
    return bounds.final(c, iv, {**rl, **lines}, eps, fold=False)

  def loss(a):
    v = low(a)
    return -jnp.sum(jnp.minimum(jnp.where(jnp.isinf(v), 0.0, v), 0.0)), v

  opt = optax.adam(c.opts.alpha_lr)

  def step(_, carry):
    a, st, best = carry
    (_, v), grad = jax.value_and_grad(loss, has_aux=True)(a)
    grad = jax.tree_util.tree_map(jnp.nan_to_num, grad)  # never a NaN slope
    upd, st = opt.update(grad, st, a)
    a = jax.tree_util.tree_map(lambda s: jnp.clip(s, 0.0, 1.0), optax.apply_updates(a, upd))
    return a, st, _better(best, v)

  a, _, best = jax.lax.fori_loop(0, c.opts.alpha_steps, step,
                                 (slopes, opt.init(slopes), low0))
  return _better(best, low(a))


def _better(best, v):
  """The larger bound per margin; a NaN iterate never replaces a bound (so the
  result is never below CROWN's, which `best` starts from)."""
  return jnp.where(jnp.isnan(v), best, jnp.maximum(best, v))
