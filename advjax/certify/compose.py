"""CROWN's bounds of a conv layer composed from the layer below's (issue 28).

The patches pass (`patches.refine`) pulls the ±identity rows of every position
of a pre-activation v = conv(y) + b back to x: for the paper's conv net's
second convolution that is 128 rows × (10×10×32) per position pushed through
the first convolution's transpose, three quarters of them zeros left by the
max pool.

Where the chain below y is *separable*, the same pass costs a fraction of it.
Separable: from y down to the last nonlinearity of the chain, every node is
elementwise (activations, constant shifts and scalings) or a window that does
not overlap (pooling with stride = window); below it, only linear nodes. Then a
row reaches every nonlinear node with at most one element of y behind each of
its coefficients, and CROWN's pull-back, which picks a line by the sign of
each coefficient, is additive and positively homogeneous over y's elements:

    pull(Σ_e c_e·e) = Σ_e c_e⁺·pull(+e) + |c_e⁻|·pull(−e).

So the pass of each element's ±identity row to x is computed once (G±: a
small patch per element, the linear lower bounds of ±y_e), and v's rows at x
are y's coefficients contracted with G, each element's patch added at its
offset. The result is the chain pass's, up to the order of float64 sums
(tested against it and the dense-matrix reference). The paper's conv net:
0.72 GMAC per ε instead of the chain's 2.0, as matrix products instead of
a one-channel transposed convolution.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from advjax.certify import patches
from advjax.certify.patches import image

HIGHEST = lax.Precision.HIGHEST
ELEMENTWISE = ("same", "neg", "scale", "shift", "act")


def split(g, steps):
  """Index of v's first convolution when the chain below it is separable
  (module doc) and has a nonlinearity to gain from; else None."""
  i = next((j for j, s in enumerate(steps) if s.kind == "conv"), None)
  if i is None:
    return None
  lower = steps[i + 1:]
  nonlinear = [j for j, s in enumerate(lower) if s.kind == "act" or (
      s.kind == "window" and g.nodes[s.k].prim.name == "reduce_window_max")]
  if not nonlinear:
    return None
  for s in lower[:nonlinear[-1] + 1]:
    if s.kind not in ELEMENTWISE and not (s.kind == "window" and s.stride == s.win):
      return None
  return i


class Lower(NamedTuple):
  """Every element's ±identity row of y pulled back to x, padded for v's frame
  of y: P (2, a·b·d, H, W, C), off and mag (2, H, W, C)."""
  P: jax.Array
  off: jax.Array
  mag: jax.Array
  window: tuple  # (a, b, d): an element's patch at x
  stride: tuple  # its step in x per step in y


def _map(one, origins, per: int):
  if per >= origins.shape[0]:
    return jax.vmap(one)(origins)
  return lax.map(one, origins, batch_size=per)


def lower_rows(c, rl, lower, y: int, f_y) -> Lower:
  """G± of every element of y (its pass along `lower`), padded by frame f_y."""
  fr = patches.frames(c.g, lower, y)
  pre = patches.layer_arrays(c, rl, lower, fr)
  eye = patches.identity(c, y)
  H, W, C = image(c.g.shapes[y])[1]
  hh, ww = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
  origins = jnp.asarray(np.stack([hh.ravel(), ww.ravel()], -1), jnp.int32)
  per = max(1, c.opts.patch_budget // patches.peak(c.g, lower, fr))
  P, off, mag = _map(lambda o: patches.pulled(c, lower, fr, pre, eye, o), origins, per)
  fx = fr[c.g.x_id]
  d = image(c.g.shapes[c.g.x_id])[1][2]
  P = P.reshape((H, W, 2, C, -1)).transpose(2, 4, 0, 1, 3)
  off, mag = (a.reshape(H, W, 2, C).transpose(2, 0, 1, 3) for a in (off, mag))
  return Lower(*(patches.padded(a, f_y) for a in (P, off, mag)), fx.K + (d,), fx.S)


def position(c, upper, fr, pre, G: Lower, o_v, eps):
  """Lower bounds (2C,) of ±v at one position: the rows pulled through
  `upper` to y, then composed with G at x."""
  P, off, mag = patches.pulled(c, upper, fr, pre, patches.identity(c, upper[0].z), o_v)
  f_y = fr[upper[-1].y]
  Gp, Go, Gm = (patches.at(a, f_y, o_v) for a in (G.P, G.off, G.mag))
  pos, neg = jnp.maximum(P, 0), jnp.maximum(-P, 0)
  T = (jnp.einsum("rijc,kijc->rijk", pos, Gp[0], precision=HIGHEST)
       + jnp.einsum("rijc,kijc->rijk", neg, Gp[1], precision=HIGHEST))
  off = off + jnp.sum(pos * Go[0] + neg * Go[1], (1, 2, 3))
  mag = mag + jnp.sum(pos * Gm[0] + neg * Gm[1], (1, 2, 3))
  (a, b, d), (sh, sw), R = G.window, G.stride, P.shape[0]
  fx = fr[c.g.x_id]
  Px = jnp.zeros((R,) + fx.K + (d,), P.dtype)
  for i in range(f_y.K[0]):  # each element's patch at its offset in v's patch
    for j in range(f_y.K[1]):
      Px = Px.at[:, i * sh:i * sh + a, j * sw:j * sw + b].add(T[:, i, j].reshape(R, a, b, d))
  return patches.at_x(c, fx, pre, Px, off, mag, o_v, eps)


def refine(c, rl, v: int, eps):
  """(lower, upper) of v by the patches pass: composed where its chain is
  separable below its first convolution, else `patches.refine`."""
  g = c.g
  steps = patches.chain(g, c.plan.kinds, c.plan.rounds, v)
  i = split(g, steps)
  if i is None:
    return patches.refine(c, rl, v, eps)
  upper, lower = steps[:i + 1], steps[i + 1:]
  fr = patches.frames(g, steps, v)
  f_y = fr[upper[-1].y]
  G = lower_rows(c, rl, lower, upper[-1].y, f_y)
  pre = patches.layer_arrays(c, rl, upper, fr)
  R = 2 * image(g.shapes[v])[1][2]
  kx = int(np.prod(G.window))
  elements = R * max(int(np.prod(f_y.K)) * max(kx, image(g.shapes[upper[-1].y])[1][2]),
                     int(np.prod(fr[g.x_id].K)) * G.window[2])
  return patches.over_positions(
      c, v, lambda o: position(c, upper, fr, pre, G, o, eps), elements)
