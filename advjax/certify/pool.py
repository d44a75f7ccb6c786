"""Max over windows (max-pooling, reduce_max): interval and linear bounds.

y = max_{i∈W} z_i is bounded below by any one z_j; the relaxation takes j with
the largest lower bound. Above, y = z_j exactly when l_j ≥ u_i for every other
i in the window (a *dominated* window), otherwise y ≤ max_i u_i, a constant
(DeepPoly's rule, Singh et al. 2019; auto_LiRPA's too). α-CROWN may replace
that constant by a convex mix of it with two linear upper lines, weighted per
window (`upper_lines`; the weights are optimised with the ReLU slopes, where
the constant is loose on a window that is almost dominated or whose elements
are all small). The windows of reduce_window_max are
taken as strided slices (one per window offset) of the input padded with −∞
for bounds and 0 for the linear map; reduce_max's are its reduced axes
(`advjax.platform.convgrad`'s pool is a reshape then reduce_max).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from advjax.certify.interpret import Node
from advjax.certify.rules import unsupported


class PoolRelax(NamedTuple):
  """onehot (n_w, *out): the window element j of the lower line; dom: the
  windows where y = z_j above too; top: max_i u_i, the constant upper line.
  upper (optional, α-CROWN's): the upper line of an undominated window as a
  convex combination of three valid ones (`upper_lines`)."""
  onehot: jax.Array
  dom: jax.Array
  top: jax.Array
  upper: tuple | None = None  # (coefficients (n_w, *out), constant (*out))


def patches(node: Node, z, fill):
  """(n_w, *out): the elements of every window of z, padding = `fill`."""
  p = node.params
  if node.prim.name == "reduce_max":
    axes = tuple(p["axes"])
    keep = [a for a in range(z.ndim) if a not in axes]
    t = jnp.transpose(z, axes + tuple(keep))
    return t.reshape((-1,) + tuple(z.shape[a] for a in keep))
  if set(p["base_dilation"]) | set(p["window_dilation"]) != {1}:
    raise unsupported(node, "dilated pooling windows")
  zp = lax.pad(z, jnp.asarray(fill, z.dtype), [(a, b, 0) for a, b in p["padding"]])
  win, s = p["window_dimensions"], p["window_strides"]
  out = [(n - w) // st + 1 for n, w, st in zip(zp.shape, win, s)]
  return jnp.stack([
      lax.slice(zp, o, [oi + (n - 1) * st + 1 for oi, n, st in zip(o, out, s)], s)
      for o in itertools.product(*[range(w) for w in win])])


def interval(node: Node, l, u):
  """(l, u) of the max: the max of the lower and of the upper bounds."""
  return (jnp.max(patches(node, l, -jnp.inf), 0),
          jnp.max(patches(node, u, -jnp.inf), 0))


def relax(node: Node, l, u, tol: float, weights=None) -> PoolRelax:
  """The DeepPoly lines of the max over each window (see the module doc); the
  dominance test and the constant upper line keep a rounding slack. With
  `weights` (2, *out) in [0, 1] (α-CROWN's), the upper line of an undominated
  window mixes the constant with two linear lines (`upper_lines`)."""
  pl, pu = patches(node, l, -jnp.inf), patches(node, u, -jnp.inf)
  j = jnp.argmax(pl, 0)
  onehot = jnp.arange(pl.shape[0]).reshape((-1,) + (1,) * j.ndim) == j
  other = jnp.max(jnp.where(onehot, -jnp.inf, pu), 0)
  best = jnp.max(pl, 0)
  tiny = jnp.finfo(l.dtype).tiny
  slack = tol * (jnp.abs(best) + jnp.where(jnp.isfinite(other), jnp.abs(other), 0.0)) + tiny
  dom = best >= other + slack  # a window of one element: other = −∞
  top = jnp.max(pu, 0)
  top = top + tol * jnp.abs(top) + tiny
  r = PoolRelax(onehot.astype(l.dtype), dom, top)
  return r if weights is None else r._replace(upper=upper_lines(r, pl, pu, tol, weights))


def upper_lines(r: PoolRelax, pl, pu, tol: float, weights):
  """y ≤ a·z + b on an undominated window, a convex combination of
    top:  y ≤ max_i u_i;
    sum:  y ≤ Σ_i (z_i − l_i) + max_i l_i   (z_k − l_k ≤ the sum, all terms ≥ 0);
    near: y ≤ z_j + Σ_{k≠j} (u_k − l_j)⁺   (z_k ≤ u_k ≤ z_j + u_k − l_j);
  with weights w_top = w₀, w_sum = (1 − w₀)·w₁, w_near = (1 − w₀)(1 − w₁); w₀ = 1
  is DeepPoly's line. Each constant is rounded up by its terms' slack; a window
  with an unbounded element keeps the constant."""
  real = jnp.isfinite(pl) & jnp.isfinite(pu)  # padding (−∞) is no element
  ok = jnp.all(real | (pl == -jnp.inf) & (pu == -jnp.inf), 0)
  lz, uz = jnp.where(real, pl, 0.0), jnp.where(real, pu, 0.0)
  best = jnp.sum(r.onehot * lz, 0)
  c_sum = best - jnp.sum(lz, 0)
  c_sum = c_sum + tol * (jnp.abs(best) + jnp.sum(jnp.abs(lz), 0))
  gap = jnp.where(real & (r.onehot == 0), jnp.maximum(uz - best, 0.0), 0.0)
  c_near = jnp.sum(gap, 0) + tol * jnp.sum(jnp.where(real, jnp.abs(uz) + jnp.abs(best), 0.0), 0)
  w0, w1 = jnp.clip(weights[0], 0.0, 1.0), jnp.clip(weights[1], 0.0, 1.0)
  w0 = jnp.where(ok, w0, 1.0)
  w_sum, w_near = (1 - w0) * w1, (1 - w0) * (1 - w1)
  a = w_sum * real.astype(pl.dtype) + w_near * r.onehot
  b = w0 * r.top + jnp.where(ok, w_sum * c_sum + w_near * c_near, 0.0)
  return a, b


def default_weights(r: PoolRelax):
  """α's start: DeepPoly's constant upper line (w₀ = 1), w₁ = ½."""
  return jnp.stack([jnp.ones_like(r.top), jnp.full_like(r.top, 0.5)])


def pull(node: Node, lam, r: PoolRelax, in_shape, dtype):
  """Λ through the window max, lower bound of Λ·y: (Λ_in, offset, |offset|).

  Positive coefficients take the lower line z_j, negative ones z_j where the
  window is dominated and elsewhere the constant max u (or r.upper's line).
  """
  pos, neg = jnp.maximum(lam, 0), jnp.minimum(lam, 0)
  free = jnp.where(r.dom, 0.0, neg)  # rows on undominated windows' upper lines
  coef = pos + jnp.where(r.dom, neg, 0.0)
  if r.upper is None:  # DeepPoly: every row through z_j alone
    const = free * jnp.where(r.dom, 0.0, r.top)  # no 0·∞ on a dominated window
    sel = lambda z: jnp.sum(r.onehot * patches(node, z, 0.0), 0)
  else:  # per element: z_j's coefficient and the upper line's
    a, b = r.upper
    coef = coef[:, None] * r.onehot + free[:, None] * a
    const = free * jnp.where(r.dom, 0.0, b)
    sel = lambda z: patches(node, z, 0.0)
  _, back = jax.vjp(sel, jnp.zeros(in_shape, dtype))
  lam_in, = jax.vmap(back)(coef)
  axes = tuple(range(1, lam.ndim))
  return lam_in, jnp.sum(const, axes), jnp.sum(jnp.abs(const), axes)
