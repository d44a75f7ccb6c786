"""The record the attack's stages share: one problem per lane, on flat lanes."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from advjax import adapt, criteria


class Lanes(NamedTuple):
  """The batch as the attack's stages read it (built inside the traced attack).

  Attributes:
    apply: the per-example apply(params, x) -> logits.
    params: the weights (jit arguments).
    x: the inputs as flat lanes (B, n).
    l: the labels to reach (away: to leave), (B,).
    shape: one input's shape (x's lanes reshape to (B,) + shape).
    lo, hi: the box, flat (n,) or per lane (B, n).
    m: the per-lane success margin (`criteria.margin`), or None (DDN alone).
    away: leave l (untargeted) rather than reach it.
  """
  apply: Callable
  params: Any
  x: jax.Array
  l: jax.Array
  shape: tuple
  lo: jax.Array
  hi: jax.Array
  m: Any = None
  away: bool = False

  def logits(self, z: jax.Array) -> jax.Array:
    """Batched logits at flat points z (B, n)."""
    return adapt.batched(self.apply)(self.params, z.reshape((z.shape[0],) + self.shape))

  def reached(self, z: jax.Array) -> jax.Array:
    """Per lane, whether flat z reaches l (leaves it, away) by the margin m."""
    return criteria.reaches(self.logits(z), self.l, self.m, self.away)

  def toward(self, l: jax.Array, away: bool = False) -> "Lanes":
    """The same lanes aimed at other labels."""
    return self._replace(l=l, away=away)
