"""Linear relaxations of activations over a pre-activation interval [l, u].

CROWN (Zhang et al., NeurIPS 2018) bounds each unit y = σ(z), z ∈ [l, u], by
two lines al·z + bl ≤ y ≤ au·z + bu:

  * ReLU (and max/min with a constant, shifted ReLUs): the chord above; below,
    slope 0 or 1 chosen by |l| vs u ("adaptive"), or a free slope α ∈ [0, 1]
    (α-CROWN, Xu et al. ICLR 2021);
  * sigmoid and tanh (convex below 0, concave above): on a convex piece the
    chord above and the tangent at the midpoint below, on a concave piece the
    reverse; across 0 the chord where it is valid (slope ≤ σ'(u) above,
    ≤ σ'(l) below), else the tangent from the far endpoint, its touching point
    found by bisection and taken on the sound side.

Every line is then moved outward by a slack tol·(|a|(|l| + |u|) + |b|), so
that rounding in the line never makes it cross the activation; the intervals
it is built on are themselves rounded outward when made
(`rules.affine_interval`), so no absolute term (of some scale) is needed.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Lines(NamedTuple):
  """al·z + bl ≤ σ(z) ≤ au·z + bu for z in [l, u], elementwise."""
  al: jax.Array
  bl: jax.Array
  au: jax.Array
  bu: jax.Array


def widen(lines: Lines, l, u, tol: float) -> Lines:
  """The lines moved outward by the rounding slack (see the module doc)."""
  w = jnp.abs(l) + jnp.abs(u)
  tiny = jnp.finfo(l.dtype).tiny  # underflow only: no absolute term of scale
  dl = tol * (jnp.abs(lines.al) * w + jnp.abs(lines.bl)) + tiny
  du = tol * (jnp.abs(lines.au) * w + jnp.abs(lines.bu)) + tiny
  return lines._replace(bl=lines.bl - dl, bu=lines.bu + du)


def adaptive_slope(l, u):
  """CROWN's lower ReLU slope: 1 where u ≥ −l (the unit mostly passes), else 0."""
  return (u >= -l).astype(l.dtype)


def relu(l, u, slope=None) -> Lines:
  """Lines of max(z, 0) on [l, u]; `slope` (in [0, 1]) for the unstable units."""
  on, off = l >= 0, u <= 0
  unstable = ~on & ~off
  s = u / jnp.where(unstable, u - l, 1.0)
  slope = adaptive_slope(l, u) if slope is None else jnp.clip(slope, 0.0, 1.0)
  one, zero = jnp.ones_like(l), jnp.zeros_like(l)
  au = jnp.where(on, one, jnp.where(off, zero, s))
  bu = jnp.where(unstable, -s * l, zero)
  al = jnp.where(on, one, jnp.where(off, zero, slope))
  return Lines(al, zero, au, bu)


def max_const(l, u, c, slope=None) -> Lines:
  """Lines of max(z, c) = c + relu(z − c)."""
  r = relu(l - c, u - c, slope)
  return Lines(r.al, r.bl + c - r.al * c, r.au, r.bu + c - r.au * c)


def min_const(l, u, c, slope=None) -> Lines:
  """Lines of min(z, c) = −max(−z, −c): the negated lines swap roles."""
  m = max_const(-u, -l, -c, slope)
  return Lines(m.au, -m.bu, m.al, -m.bl)


_S_SHAPED = {
    "logistic": (jax.nn.sigmoid, lambda z: jax.nn.sigmoid(z) * (1 - jax.nn.sigmoid(z))),
    "tanh": (jnp.tanh, lambda z: 1 - jnp.tanh(z) ** 2),
}


def _tangent(f, df, d):
  return df(d), f(d) - df(d) * d


def _touch(f, df, p, a, b, iters: int):
  """Bisection for d in [a, b] where the tangent at d passes through (p, f(p)).

  φ(d) = f(d) + f'(d)(p − d) − f(p) increases on [a, b] in both uses;
  returns (a, b) with φ(a) ≤ 0 ≤ φ(b) (the caller takes its sound end).
  """
  phi = lambda d: f(d) + df(d) * (p - d) - f(p)

  def body(_, ab):
    a, b = ab
    m = (a + b) / 2
    neg = phi(m) < 0
    return jnp.where(neg, m, a), jnp.where(neg, b, m)

  return jax.lax.fori_loop(0, iters, body, (a, b))


def s_shaped(name: str, l, u, iters: int = 30) -> Lines:
  """CROWN lines of sigmoid or tanh on [l, u] (convex for z < 0, concave above)."""
  f, df = _S_SHAPED[name]
  tiny = 8 * jnp.finfo(l.dtype).eps * (1 + jnp.abs(l) + jnp.abs(u))
  flat = u - l <= tiny  # a point: f(l) ≤ y ≤ f(u), f increasing
  w = jnp.where(flat, 1.0, u - l)
  k = (f(u) - f(l)) / w
  chord = (k, f(l) - k * l)
  mid = _tangent(f, df, (l + u) / 2)
  zero = jnp.zeros_like(l)
  # Across 0: above, the tangent from (l, f(l)) touching at d ∈ [0, u] (the end
  # with φ ≥ 0 lies above f(l)); below, from (u, f(u)) at d ∈ [l, 0] (φ ≤ 0).
  up_d = _touch(f, df, l, zero, jnp.maximum(u, 0.0), iters)[1]
  lo_d = _touch(f, df, u, jnp.minimum(l, 0.0), zero, iters)[0]
  up_t, lo_t = _tangent(f, df, up_d), _tangent(f, df, lo_d)
  convex, concave = u <= 0, l >= 0
  up_chord = convex | (~concave & (k <= df(u)))
  lo_chord = concave | (~convex & (k <= df(l)))
  pick = lambda c, a, b: jnp.where(c, a, b)
  au = pick(up_chord, chord[0], pick(concave, mid[0], up_t[0]))
  bu = pick(up_chord, chord[1], pick(concave, mid[1], up_t[1]))
  al = pick(lo_chord, chord[0], pick(convex, mid[0], lo_t[0]))
  bl = pick(lo_chord, chord[1], pick(convex, mid[1], lo_t[1]))
  return Lines(jnp.where(flat, zero, al), jnp.where(flat, f(l), bl),
               jnp.where(flat, zero, au), jnp.where(flat, f(u), bu))


def lines(name: str, l, u, c=None, slope=None) -> Lines:
  """The (unwidened) lines of activation `name` with constant operand c."""
  if name == "max":
    return max_const(l, u, c, slope)
  if name == "min":
    return min_const(l, u, c, slope)
  return s_shaped(name, l, u)


def default_slope(name: str, l, u, c):
  """The adaptive lower slope of max(z, c) / min(z, c) in its ReLU's terms:
  the starting point of α-CROWN's optimisation."""
  if name == "max":
    return adaptive_slope(l - c, u - c)
  return adaptive_slope(c - u, c - l)
