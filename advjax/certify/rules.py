"""One bound rule per primitive: which kind a node is, and its affine rules.

Every node with an input that depends on x (a *bounded* input) is one of

  * 'affine': affine in its bounded inputs (dot_general and conv with constant
    weights, add/sub, mul/div by constants, neg, and the structural
    primitives: reshape, broadcast, transpose, slicing, padding, sums). Its
    CROWN pull-back is `jax.vjp` of the primitive itself (the transposed
    dot or conv), its interval rule mid ± |A|·rad, and, for variables affine
    in x, an upper bound on the norms of the rows of ∂v/∂x (`rownorm`): the
    per-unit bound v(x₀) ± ε‖row‖₂ is exact over the L2 ball for the first
    affine layer (Certification literature: IBP's first layer).
  * 'act': an elementwise monotone activation: logistic, tanh, max/min with a
    constant (ReLU is `max x 0.0`); its linear lines live in `relax`.
  * 'max': a max over windows (reduce_window_max, reduce_max): `pool`.
  * 'pair': max/min of two x-dependent operands of one shape (MinMax,
    GroupSort-2): `pair`.

Anything else on the path from x to the logits is refused with the
primitive's name and its equation (never a silent bound).

The audit: every supported primitive, its rule, and what each of its
operands and parameters is taken as (a *position* says where, and is kept
in the linear map; a *value* is a constant, and contributes 0 to |A| and to
the row norms: it enters the midpoint and the offset Λ·f(0) only). Tests:
S = tests/test_certify_soundness.py, G = tests/test_certify_generated.py
(random programs, tests/netgen.py), C = tests/test_certify.py.

| primitive | rule | operands and parameters | tests |
| --- | --- | --- | --- |
| dot_general | affine (product) | the weight: a constant, |W| in intervals; dimension_numbers: positions; precision: set to HIGHEST; preferred_element_type: the working float (a narrow one rounds, `rounding`) | C, G |
| conv_general_dilated | affine (product) | the kernel: a constant; strides, padding (zeros: 0 in |A|), lhs/rhs dilation, dimension_numbers, feature_group_count, batch_group_count: positions; precision, preferred_element_type as dot_general | C, G (stride, dilation, groups, explicit/SAME/VALID) |
| mul | affine (product) | exactly one operand bounded; the other a constant, |c| in |A| | G (scale) |
| div | affine | x / c only (a bounded divisor is refused); |A| = 1/|c| | C (avg pool), G |
| add, sub, add_any | affine | bounded operands add; a constant operand is a value | C, G (residual) |
| neg | affine, exact interval | - | G (scale) |
| reshape, broadcast_in_dim, transpose, squeeze, rev, slice, copy, copy_p | structural, exact interval | shapes, dimensions, permutation, strides: positions | C, G (transpose, rev, slice) |
| pad | structural | padding_config (low, high, interior; negative crops): positions; the padding value: a value (must not depend on x) | S (jnp.pad, lax.pad interior), G |
| concatenate, stack | structural | dimension / axis: positions; a constant piece: a value | C, G (concat) |
| select_n | structural | the predicate: a position (must not depend on x); a constant case: a value | G (select) |
| gather | structural | the indices: positions (must not depend on x); dimension_numbers, slice_sizes, mode: positions; fill_value: a value (`linear_part` sets it to 0) | S (take fill), G (gather) |
| dynamic_slice, dynamic_update_slice | structural | index operands: positions (must not depend on x); a constant operand or update: a value | - |
| convert_element_type | structural | new_dtype: a float (else refused); one narrower than its input rounds (`rounding`) | S (bfloat16, float16), G (cast) |
| reduce_sum, reduce_window_sum, cumsum | affine (sum) | axes, windows, strides, padding (zeros), dilations: positions | C (avg pool), G (avgpool) |
| logistic, tanh | act (`relax.s_shaped`) | - ; a narrow result rounds | C, G |
| max, min | act (`relax.max_const`, `min_const`) | one operand bounded, the other a constant (scalar or array) as the threshold | C, G (relu, clip, max_c, min_c) |
| max, min of two bounded operands | pair (`pair`) | both of the output's shape (a broadcast one is refused) | S (MinMax on a 2-D grid) |
| reduce_window_max | max (`pool`) | windows, strides, padding (−∞): positions; dilations: refused | C, G (maxpool) |
| reduce_max | max (`pool`) | axes: positions | C (pool rewrite) |

Not supported, so refused by name: reduce_window with another initial value
(lax.reduce_window(x, 0., lax.max, ...)), clamp (jnp.clip is max/min and
works), split and other multi-output primitives, products or maxima of two
x-dependent operands (other than max/min), sort, exp and the rest.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from advjax.certify.interpret import Node, UnsupportedPrimitiveError, bind

# Each output element is one input element (or a constant): |A| has 0/1 entries.
STRUCTURAL = frozenset({
    "reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims",
    "convert_element_type", "rev", "slice", "copy", "copy_p", "pad",
    "concatenate", "stack", "select_n", "dynamic_slice", "gather", "dynamic_update_slice"})
SUMS = frozenset({"reduce_sum", "reduce_window_sum", "cumsum"})
# Keep distinct x-rows orthogonal (one-to-one maps of units).
ONE_TO_ONE = frozenset({"reshape", "transpose", "squeeze", "expand_dims",
                        "convert_element_type", "rev", "copy", "copy_p", "slice",
                        "pad", "dynamic_slice", "neg", "mul", "div", "add", "sub"})
PRODUCTS = frozenset({"mul", "dot_general", "conv_general_dilated"})
ADDS = frozenset({"add", "sub", "add_any"})
ACTS = frozenset({"logistic", "tanh", "max", "min"})
MAXES = frozenset({"reduce_window_max", "reduce_max"})
# Operand positions that say *where* (indices, predicates): they must not
# depend on x, and the linear part keeps them as they are.
_INDEX = {"select_n": (0,), "gather": (1,)}
_INDEX_FROM = {"dynamic_slice": 1, "dynamic_update_slice": 2}
# Constant *values* that must not depend on x either (the padding value, the
# divisor): the linear part reads them as the constants they are, i.e. 0.
_VALUE = {"pad": (1,), "div": (1,)}


def _index(name: str, k: int) -> bool:
  return k in _INDEX.get(name, ()) or k >= _INDEX_FROM.get(name, 1 << 30)


def _fixed(name: str, k: int) -> bool:
  return _index(name, k) or k in _VALUE.get(name, ())


def unsupported(node: Node, why: str = "") -> UnsupportedPrimitiveError:
  return UnsupportedPrimitiveError(
      f"certify: no bound rule for primitive '{node.prim.name}' applied to an "
      f"input that depends on x ({node.where}){': ' + why if why else ''}. "
      "Supported: affine primitives (dot_general, conv_general_dilated, add, sub, "
      "mul/div by constants, reshape, broadcast, ...), logistic, tanh, max/min "
      "with a constant (ReLU), reduce_window_max / reduce_max (max-pooling).")


def category(node: Node, bounded: frozenset) -> str:
  """'affine', 'act' or 'max' for a node with a bounded input; else raises."""
  name = node.prim.name
  pos = [k for k, i in enumerate(node.ins) if isinstance(i, int) and i in bounded]
  if len(node.outs) != 1:
    raise unsupported(node, "several outputs")
  if name in STRUCTURAL or name in SUMS or name in ADDS or name == "neg":
    if any(_fixed(name, k) for k in pos):
      raise unsupported(node, "an index, predicate or padding value depends on x")
    if name == "convert_element_type" and not jnp.issubdtype(
        node.params["new_dtype"], jnp.floating):
      raise unsupported(node, "a conversion to a non-float type")
    return "affine"
  if name in PRODUCTS or name == "div":
    if len(pos) != 1 or _fixed(name, pos[0]):
      raise unsupported(node, "a product of two x-dependent operands" if len(pos) > 1
                        else "x in the denominator")
    return "affine"
  if name in ACTS:
    if len(pos) == 2 and name in ("max", "min"):
      return "pair"
    if len(pos) != 1:
      raise unsupported(node, "both operands depend on x")
    return "act"
  if name in MAXES:
    return "max"
  raise unsupported(node)


def abs_map(node: Node, vals, consts, dtype, shape):
  """|A|·v for the affine node's linear part A, v given per bounded input."""
  name = node.prim.name
  if name in ADDS:
    return sum(jnp.broadcast_to(v, shape) for v in vals if v is not None)
  if name == "neg":
    return vals[0]
  if name == "div":
    return vals[0] / jnp.abs(consts[1])
  if name in PRODUCTS:
    args = [v if v is not None else jnp.abs(c) for v, c in zip(vals, consts)]
  else:  # structural and sums: indices kept; every constant value (a padding
    # value, a select's constant case, a concatenated constant) contributes 0
    args = [v if v is not None else (c if _index(name, k) else jnp.zeros_like(c))
            for k, (v, c) in enumerate(zip(vals, consts))]
  return bind(linear_part(node), args, dtype)[0]


def linear_part(node: Node) -> Node:
  """The node with its constant parameters that are values, not positions, set
  to 0: gather's fill_value (out-of-range rows are that constant, so |A| has
  0 there). Everything else about a primitive's parameters is its linear map."""
  if node.prim.name == "gather" and "fill_value" in node.params:
    return node._replace(params={**node.params, "fill_value": 0})
  return node


def affine_interval(node: Node, ivs, consts, dtype, shape, tol: float = 0.0):
  """(l, u) of an affine node from intervals of its bounded inputs: mid ± |A|rad,
  moved outward by tol × the magnitude of the terms that computed them
  (|A|(|mid| + rad) + |the constant part|), so that rounding never narrows
  them, whatever their scale (no absolute term)."""
  if node.prim.name in STRUCTURAL:  # each output is an input or a constant: exact
    ends = [[c if iv is None else iv[e] for iv, c in zip(ivs, consts)] for e in (0, 1)]
    return tuple(bind(node, args, dtype)[0] for args in ends)
  if node.prim.name == "neg":
    return -ivs[0][1], -ivs[0][0]
  mids = [None if iv is None else (iv[0] + iv[1]) / 2 for iv in ivs]
  rads = [None if iv is None else (iv[1] - iv[0]) / 2 for iv in ivs]
  mid = bind(node, [m if m is not None else c for m, c in zip(mids, consts)], dtype)[0]
  rad = abs_map(node, rads, consts, dtype, shape)
  if not tol:
    return mid - rad, mid + rad
  size = [None if m is None else jnp.abs(m) + r for m, r in zip(mids, rads)]
  zero = [jnp.zeros_like(m) if m is not None else c for m, c in zip(mids, consts)]
  mag = abs_map(node, size, consts, dtype, shape) + jnp.abs(bind(node, zero, dtype)[0])
  return mid - rad - tol * mag, mid + rad + tol * mag


def affine_rownorm(node: Node, rns, consts, dtype, shape):
  """(upper bound on ‖∂v/∂x row‖₂ per unit, rows orthogonal?) of an affine node.

  Orthogonal input rows (x itself, up to one-to-one maps) give the exact
  norms sqrt(Σ W² ‖row‖²); otherwise the triangle inequality Σ|W|‖row‖.
  """
  name = node.prim.name
  vals = [None if r is None else r[0] for r in rns]
  pos = [k for k, r in enumerate(rns) if r is not None]
  orth = len(pos) == 1 and rns[pos[0]][1]
  if orth and (name in PRODUCTS and name != "mul" or name in SUMS):
    sq = [None if v is None else v * v for v in vals]
    c2 = [None if c is None else c * c for c in consts]
    rn = jnp.sqrt(abs_map(node, sq, c2, dtype, shape))
    return rn, False
  rn = abs_map(node, vals, consts, dtype, shape)
  keep = orth and (name in ONE_TO_ONE or name == "broadcast_in_dim")
  return rn, bool(keep and rn.size == vals[pos[0]].size)


def affine_pull(node: Node, lam, shapes, consts, dtype):
  """Λ pulled back through an affine node: (Λ·A per bounded input, Λ·f(0)).

  A is the node's own linear part: `jax.vjp` of the primitive at 0 (so conv
  pulls back by the transposed conv), vmapped over the rows of Λ.
  """
  pos = [k for k, s in enumerate(shapes) if s is not None]

  def f(*b):
    args = list(consts)
    for k, v in zip(pos, b):
      args[k] = v
    return bind(node, args, dtype)[0]

  f0, pull = jax.vjp(f, *[jnp.zeros(shapes[k], dtype) for k in pos])
  cots = jax.vmap(pull)(lam)
  axes = tuple(range(1, lam.ndim))
  off = jnp.sum(lam * f0, axes)
  mag = jnp.sum(jnp.abs(lam) * jnp.abs(f0), axes)
  return dict(zip(pos, cots)), off, mag
