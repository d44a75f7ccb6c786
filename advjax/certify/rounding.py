"""A model that computes in a float narrower than float32, certified as it runs.

The bounds are computed in float64 on the real-arithmetic network with the
model's weights (`advjax.certify.search`), so float32's own rounding is out
of their scope. A narrower float is not: a bfloat16 layer rounds each of its
results to 8 significant bits, far more than the slack of a bound, and a
linear classifier run in bfloat16 misclassifies points inside the radius of
its float32 twin. So every node whose result is stored in a narrow format
(bfloat16, float16, the float8s) and that can round is given its rounding
as an error term: the computed y satisfies

    |y − f(inputs)| ≤ rel·|f(inputs)| + tiny,

with rel = u·(1 + 2⁻¹⁰), u = eps/2 the format's unit roundoff (round to
nearest) and the factor room for a double rounding through float32 (whose
u = 2⁻²⁴ is below 2⁻¹⁰·u for every narrow format), and tiny = its smallest
normal (a subnormal result, flushed to zero or not). A result
that could exceed the format's largest finite value may be ±inf: the bound
is then −∞ (not certified at that radius). Which nodes round:

  * `convert_element_type` to a format with fewer significand bits or a
    smaller exponent range than its input's (a cast that drops precision);
  * arithmetic with a narrow result: add, sub, mul, div, dot_general,
    conv_general_dilated, the sums, logistic, tanh. Dots, convolutions and
    reductions are taken as accumulated in float32 or wider and rounded once
    to the narrow format (what XLA does for bfloat16 and float16 on CPU and
    GPU); the accumulation's own float32 rounding is, like all float32
    rounding, outside the real-arithmetic scope;
  * never: structural primitives (reshape, pad, gather, ...), neg, max/min
    and the window maxima, which return one of their inputs exactly.

In the passes, an affine node that rounds adds ±err to its interval and
−|Λ|·err to every bound pulled back through it; an activation that rounds
moves its lines outward by err. Variables downstream of a rounding are not
affine in x, so the ball's per-unit bound (`rules.affine_rownorm`) and the
Lipschitz bounds (which assume the real network) are not used for them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

# Results equal to one of the inputs: no rounding in any format.
EXACT = frozenset({"neg", "max", "min", "reduce_max", "reduce_window_max"})
F32_BITS = np.finfo(np.float32).nmant


class Format(NamedTuple):
  """What a rounding to one float format can do (float64 scalars)."""
  name: str
  rel: float
  tiny: float
  max: float


def narrow(dtype) -> bool:
  """Whether `dtype` is a float with fewer significand bits than float32."""
  d = jnp.dtype(dtype)
  return jnp.issubdtype(d, jnp.floating) and jnp.finfo(d).nmant < F32_BITS


def fmt(dtype) -> Format:
  f = jnp.finfo(jnp.dtype(dtype))
  rel = float(f.eps) / 2 * (1 + 2.0 ** -10)
  return Format(jnp.dtype(dtype).name, rel, float(f.smallest_normal), float(f.max))


def _drops(src, dst) -> bool:
  """A cast src -> dst that can round (fewer bits, or a smaller range)."""
  if not jnp.issubdtype(jnp.dtype(src), jnp.floating):
    return True  # an integer to a narrow float: rounds large integers
  a, b = jnp.finfo(jnp.dtype(src)), jnp.finfo(jnp.dtype(dst))
  return b.nmant < a.nmant or float(b.max) < float(a.max) or float(b.smallest_normal) > float(
      a.smallest_normal)


def of_node(node, in_dtypes, out_dtype, structural) -> Format | None:
  """The rounding a node's result undergoes, or None when it is exact."""
  if not narrow(out_dtype):
    return None
  name = node.prim.name
  if name == "convert_element_type":
    return fmt(out_dtype) if any(_drops(d, out_dtype) for d in in_dtypes) else None
  if name in EXACT or name in structural:
    return None
  return fmt(out_dtype)


def error(f: Format, l, u):
  """(err, overflow) of rounding any value in [l, u]: err = rel·max|·| + tiny;
  err is +inf where the format may overflow."""
  m = jnp.maximum(jnp.abs(l), jnp.abs(u))
  err = f.rel * m + f.tiny
  return jnp.where(m + err >= f.max, jnp.inf, err)


def first(g, plan) -> str | None:
  """'<format> at <where>' of the model's first rounding node, or None."""
  for k, r in sorted(plan.rounds.items()):
    return f"{r.name} at {g.nodes[k].where}"
  return None
