"""Convolution input gradients that stay on XLA:CPU's fast path inside loops.

The attack runs its whole c search in one jitted while loop. Inside a loop body
XLA:CPU compiles the input gradient of a convolution (the transposed
convolution autodiff writes: the kernel reversed, its in/out features swapped
*in the dimension labels*) to a kernel layout its fast convolution path does
not take: 20 conv-net input gradients cost 2.9× as much in a `fori_loop` as
dispatched one by one from Python, and 3.7× on a plain two-conv net
(BUILD_NOTES.md, issue 12). Swapping the kernel's features *physically*, behind
an `optimization_barrier` so that the transpose is not folded back into the
labels, restores the fast path: the conv net's 20 in-loop gradients took
3.17 s before and 1.19 s after (1.63 s dispatched from Python).

`canonical(apply)` re-evaluates a per-example apply(params, x) with every
ungrouped `conv_general_dilated` replaced by a custom-VJP one that computes its
input gradient that way; values and gradients are identical (tested against
plain autodiff). It is applied only where the attack differentiates (reverse
mode) on the CPU backend; grouped convolutions and other backends are left as
they are.

Max-pooling whose window equals its stride (no padding, sizes divisible: the
MNIST conv net's 2×2 pools) is re-expressed too. Its autodiff gradient is an
XLA `select_and_scatter`, slow on XLA:CPU: the conv net's in-loop input
gradient took 48.0 ms per 100 images with it and 31.7 ms with a reshape-max
whose custom VJP sends each window's gradient to its first maximal element,
which is what `select_and_scatter` does, so gradients are identical, ties
included (BUILD_NOTES.md, session 5). Overlapping pools (AlexNet's 3×3,
stride 2) are left as they are.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax
import jax.extend.core as jex_core

try:  # jax's own padding rule for the transposed convolution (private API)
  from jax._src.lax.convolution import _conv_general_vjp_lhs_padding as _vjp_padding
except ImportError:  # pragma: no cover: another jax layout; keep autodiff's rule
  _vjp_padding = None


def _plain(params):
  return lambda lhs, rhs: lax.conv_general_dilated_p.bind(lhs, rhs, **params)


def _input_grad(g, lhs_shape, rhs, params):
  """The gradient w.r.t. the conv's input, the kernel in a physical layout."""
  lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
  sd = lambda spec: spec[2:]
  padding = _vjp_padding(
      [lhs_shape[d] for d in sd(lhs_spec)], [rhs.shape[d] for d in sd(rhs_spec)],
      params["window_strides"], [g.shape[d] for d in sd(out_spec)],
      params["padding"], params["lhs_dilation"], params["rhs_dilation"])
  # Reverse the window and swap in/out features in memory; the barrier keeps
  # XLA from folding the swap back into the dimension labels.
  k = jnp.swapaxes(lax.rev(rhs, tuple(sd(rhs_spec))), rhs_spec[0], rhs_spec[1])
  k = lax.optimization_barrier(k.astype(g.dtype))
  out = lax.conv_general_dilated(
      g, k, window_strides=params["lhs_dilation"], padding=padding,
      lhs_dilation=params["window_strides"], rhs_dilation=params["rhs_dilation"],
      dimension_numbers=lax.ConvDimensionNumbers(out_spec, rhs_spec, lhs_spec),
      precision=params["precision"])
  return out


@functools.lru_cache(maxsize=None)
def _conv(params_items: tuple) -> Callable:
  """A custom-VJP convolution for one set of (hashable) conv parameters."""
  params = dict(params_items)
  plain = _plain(params)

  @jax.custom_vjp
  def conv(lhs, rhs):
    return plain(lhs, rhs)

  def fwd(lhs, rhs):
    return plain(lhs, rhs), (lhs, rhs)

  def bwd(res, g):
    lhs, rhs = res
    g_rhs = jax.vjp(lambda r: plain(lhs, r), rhs)[1](g)[0]  # unused by the attack
    return _input_grad(g, lhs.shape, rhs, params).astype(lhs.dtype), g_rhs

  conv.defvjp(fwd, bwd)
  return conv


def _split(shape: tuple, window: tuple):
  """shape with each pooled dimension n split into (n // w, w); the w axes."""
  new, axes = [], []
  for n, w in zip(shape, window):
    new += [n] if w == 1 else [n // w, w]
    axes += [] if w == 1 else [len(new) - 1]
  return tuple(new), tuple(axes)


@functools.lru_cache(maxsize=None)
def _pool(shape: tuple, window: tuple) -> Callable:
  """Non-overlapping max-pool as a reshape-max, its gradient to each window's
  first maximum (row-major in the window, as `select_and_scatter` picks)."""
  new, axes = _split(shape, window)
  keep = tuple(i for i in range(len(new)) if i not in axes)
  perm = keep + axes  # the window's axes last, to flatten them in row-major order
  inv = tuple(perm.index(i) for i in range(len(new)))
  plain = lambda x: x.reshape(new).max(axes)

  @jax.custom_vjp
  def pool(x):
    return plain(x)

  def bwd(x, g):
    xt = jnp.transpose(x.reshape(new), perm)
    flat = xt.reshape(xt.shape[:len(keep)] + (-1,))
    first = jax.nn.one_hot(jnp.argmax(flat, -1), flat.shape[-1], dtype=g.dtype)
    return (jnp.transpose((first * g[..., None]).reshape(xt.shape), inv).reshape(shape),)

  pool.defvjp(lambda x: (plain(x), x), bwd)
  return pool


def _rewritable(eqn) -> bool:
  p = eqn.params
  if eqn.primitive is lax.reduce_window_max_p:  # a non-overlapping pool
    shape = eqn.invars[0].aval.shape
    return (p["window_dimensions"] == p["window_strides"]
            and all(a == b == 0 for a, b in p["padding"])
            and set(p["base_dilation"]) | set(p["window_dilation"]) == {1}
            and all(n % w == 0 for n, w in zip(shape, p["window_dimensions"])))
  return (eqn.primitive is lax.conv_general_dilated_p and p["feature_group_count"] == 1
          and p["batch_group_count"] == 1 and p.get("preferred_element_type") is None)


def _has_conv(jaxpr) -> bool:
  """Whether any convolution or pool in jaxpr (or its pjits) is rewritten."""
  return any(_rewritable(e) or (e.primitive.name in ("pjit", "jit")
                                and _has_conv(e.params["jaxpr"].jaxpr))
             for e in jaxpr.eqns)


def _eval(jaxpr, consts, *args):
  """jax.core.eval_jaxpr, with ungrouped convolutions and non-overlapping
  pools swapped (also in pjit)."""
  env = {}
  read = lambda v: v.val if isinstance(v, jex_core.Literal) else env[v]
  for v, a in zip(jaxpr.constvars, consts):
    env[v] = a
  for v, a in zip(jaxpr.invars, args):
    env[v] = a
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    if eqn.primitive is lax.reduce_window_max_p and _rewritable(eqn):
      outs = [_pool(tuple(ins[0].shape), tuple(eqn.params["window_dimensions"]))(ins[0])]
    elif _rewritable(eqn):
      outs = [_conv(tuple(sorted(eqn.params.items())))(*ins)]
    elif eqn.primitive.name in ("pjit", "jit"):
      sub = eqn.params["jaxpr"]
      outs = _eval(sub.jaxpr, sub.consts, *ins)
    else:
      with eqn.ctx.manager:  # as jax.core.eval_jaxpr binds
        outs = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(eqn.params))
      outs = outs if eqn.primitive.multiple_results else [outs]
    for v, o in zip(eqn.outvars, outs):
      env[v] = o
  return [read(v) for v in jaxpr.outvars]


@functools.lru_cache(maxsize=32)
def _program(apply: Callable, tree, avals: tuple):
  """(jaxpr, output tree, has a rewritable conv) of apply at these shapes,
  traced once, not at every call site of the attack's trace."""
  specs = [jax.ShapeDtypeStruct(s, d) for s, d in avals]
  closed, shape = jax.make_jaxpr(apply, return_shape=True)(
      *jax.tree_util.tree_unflatten(tree, specs))
  hidden = _hidden_convs(closed.jaxpr)
  if hidden:
    warnings.warn(f"advjax: {hidden} convolution(s) or pool(s) of the model sit inside "
                  "scan/while/cond and keep autodiff's gradient, which is slow inside "
                  "the attack's loops on XLA:CPU; unroll that loop in the model to "
                  "get the fast path.", RuntimeWarning, stacklevel=2)
  return closed, jax.tree_util.tree_structure(shape), _has_conv(closed.jaxpr)


def _subjaxprs(eqn):
  """The sub-programs of a higher-order equation (scan, while, cond, ...)."""
  for v in eqn.params.values():
    for sub in (v if isinstance(v, (tuple, list)) else (v,)):
      if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
        yield sub.jaxpr
      elif hasattr(sub, "eqns"):
        yield sub


def _hidden_convs(jaxpr, inside: bool = False) -> int:
  """How many convolutions or pools `_eval` cannot reach (inside scan/cond/...)."""
  n = 0
  for e in jaxpr.eqns:
    if e.primitive in (lax.conv_general_dilated_p, lax.reduce_window_max_p):
      n += inside
    sub_inside = inside or e.primitive.name not in ("pjit", "jit")
    for sub in _subjaxprs(e):
      n += _hidden_convs(sub, sub_inside)
  return n


class _Canonical:
  """apply(params, x) with its convolutions' input gradients on the fast path."""

  def __init__(self, apply: Callable):
    self.apply = apply

  def __call__(self, params, x):
    leaves, tree = jax.tree_util.tree_flatten((params, x))
    avals = tuple((tuple(jnp.shape(a)), jnp.result_type(a)) for a in leaves)
    closed, out_tree, conv = _program(self.apply, tree, avals)
    if not conv:
      return self.apply(params, x)
    return jax.tree_util.tree_unflatten(out_tree, _eval(closed.jaxpr, closed.consts, *leaves))

  def __hash__(self):
    return hash((_Canonical, self.apply))

  def __eq__(self, other):
    return isinstance(other, _Canonical) and other.apply == self.apply


def canonical(apply: Callable) -> Callable:
  """`apply` itself off the CPU backend or without jax's padding rule, else a
  re-evaluation whose convolutions have fast input gradients inside loops."""
  if _vjp_padding is None or jax.default_backend() != "cpu" or isinstance(apply, _Canonical):
    return apply
  return _Canonical(apply)
