"""Max over windows (max-pooling, reduce_max): interval and linear bounds.

y = max_{i∈W} z_i is bounded below by any one z_j; the relaxation takes j with
the largest lower bound. Above, y = z_j exactly when l_j ≥ u_i for every other
i in the window (a *dominated* window), otherwise y ≤ max_i u_i, a constant
(DeepPoly's rule, Singh et al. 2019). The windows of reduce_window_max are
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
  windows where y = z_j above too; top: max_i u_i, the constant upper line."""
  onehot: jax.Array
  dom: jax.Array
  top: jax.Array


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


def relax(node: Node, l, u, tol: float) -> PoolRelax:
  """The DeepPoly lines of the max over each window (see the module doc); the
  dominance test and the constant upper line keep a rounding slack."""
  pl, pu = patches(node, l, -jnp.inf), patches(node, u, -jnp.inf)
  j = jnp.argmax(pl, 0)
  onehot = jnp.arange(pl.shape[0]).reshape((-1,) + (1,) * j.ndim) == j
  other = jnp.max(jnp.where(onehot, -jnp.inf, pu), 0)
  best = jnp.max(pl, 0)
  tiny = jnp.finfo(l.dtype).tiny
  slack = tol * (jnp.abs(best) + jnp.where(jnp.isfinite(other), jnp.abs(other), 0.0)) + tiny
  dom = best >= other + slack  # a window of one element: other = −∞
  top = jnp.max(pu, 0)
  return PoolRelax(onehot.astype(l.dtype), dom, top + tol * jnp.abs(top) + tiny)


def pull(node: Node, lam, r: PoolRelax, in_shape, dtype):
  """Λ through the window max, lower bound of Λ·y: (Λ_in, offset, |offset|).

  Positive coefficients take the lower line z_j, negative ones z_j where the
  window is dominated and the constant max u elsewhere.
  """
  pos, neg = jnp.maximum(lam, 0), jnp.minimum(lam, 0)
  coef = pos + jnp.where(r.dom, neg, 0.0)
  const = jnp.where(r.dom, 0.0, neg) * jnp.where(r.dom, 0.0, r.top)
  sel = lambda z: jnp.sum(r.onehot * patches(node, z, 0.0), 0)
  _, back = jax.vjp(sel, jnp.zeros(in_shape, dtype))
  lam_in, = jax.vmap(back)(coef)
  axes = tuple(range(1, lam.ndim))
  return lam_in, jnp.sum(const, axes), jnp.sum(jnp.abs(const), axes)
