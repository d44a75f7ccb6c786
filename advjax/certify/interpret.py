"""A per-example model as a flat graph of primitives (the jax_verify design).

The certificate does not know the model's layers: it traces the per-example
`apply(params, x)` to a jaxpr, with the weights as jaxpr *inputs* (so they stay
jit arguments, never compiled-in constants), inlines every call-like equation
(pjit/jit, custom_jvp_call, custom_vjp_call, closed_call, remat) and keeps one
flat list of `Node`s. Each variable is an integer id; literals and constants
closed over by sub-jaxprs are `Lit`s. A variable is *bounded* when it depends
on the input x; every node with a bounded input needs a bound rule
(`advjax.certify.rules`), the others are evaluated as they are.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np

# Equations that only call a sub-jaxpr: inlined, so that a relu hidden in a
# custom_jvp_call or a pool in a custom_vjp_call meets its own rule.
CALLS = ("pjit", "jit", "custom_jvp_call", "custom_vjp_call",
         "custom_vjp_call_jaxpr", "closed_call", "core_call", "remat",
         "checkpoint", "remat2")
_SUB_KEYS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


class Lit(NamedTuple):
  """A literal or a constant captured by a sub-jaxpr."""
  value: Any


class Node(NamedTuple):
  """One primitive application: outs = prim(*ins, **params)."""
  prim: Any
  params: dict
  ins: tuple
  outs: tuple
  where: str


class Graph(NamedTuple):
  """The flat program of one example.

  Attributes:
    nodes: in evaluation order.
    param_ids: variable ids of the flattened params leaves.
    x_id: the input's id.
    out: the logits (an id, or a Lit for a model that ignores x).
    shapes: id -> shape of every variable.
    dtypes: id -> dtype of every variable as the model computes it.
    bounded: ids that depend on x.
    producer: id -> index of the node that defines it.
  """
  nodes: tuple
  param_ids: tuple
  x_id: int
  out: Any
  shapes: dict
  dtypes: dict
  bounded: frozenset
  producer: dict


class UnsupportedPrimitiveError(NotImplementedError):
  """A primitive on the path from x to the logits has no bound rule."""


def _sub(eqn):
  """(jaxpr, consts) of a call-like equation, else None."""
  if eqn.primitive.name not in CALLS:
    return None
  for k in _SUB_KEYS:
    sub = eqn.params.get(k)
    if sub is not None:
      if hasattr(sub, "consts"):  # a ClosedJaxpr
        return sub.jaxpr, list(sub.consts)
      return sub, []
  return None


class _Builder:
  """Inlines a jaxpr and its sub-jaxprs into one list of nodes."""

  def __init__(self):
    self.nodes, self.shapes, self.dtypes, self.n = [], {}, {}, 0

  def new(self, aval) -> int:
    i, self.n = self.n, self.n + 1
    self.shapes[i] = tuple(aval.shape)
    self.dtypes[i] = jnp.dtype(aval.dtype)
    return i

  def walk(self, jaxpr, consts, in_refs) -> list:
    env = {v: Lit(c) for v, c in zip(jaxpr.constvars, consts)}
    env.update(zip(jaxpr.invars, in_refs))
    read = lambda a: Lit(a.val) if isinstance(a, jex_core.Literal) else env[a]
    for k, eqn in enumerate(jaxpr.eqns):
      ins = tuple(read(a) for a in eqn.invars)
      sub = _sub(eqn)
      if sub is not None:
        outs = self.walk(sub[0], sub[1], ins)
      else:
        outs = [self.new(v.aval) for v in eqn.outvars]
        text = " ".join(str(eqn).split())
        where = f"equation {k} `{text[:160]}{'...' if len(text) > 160 else ''}`"
        self.nodes.append(Node(eqn.primitive, dict(eqn.params), ins, tuple(outs), where))
      env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _bounded(nodes, x_id: int) -> frozenset:
  b = {x_id}
  for n in nodes:
    if any(isinstance(i, int) and i in b for i in n.ins):
      b.update(n.outs)
  return frozenset(b)


@functools.lru_cache(maxsize=64)
def _trace(apply, treedef, avals: tuple, x_shape: tuple) -> Graph:
  specs = [jax.ShapeDtypeStruct(s, d) for s, d in avals]
  params = jax.tree_util.tree_unflatten(treedef, specs)
  with jax.enable_x64(False):  # the model as written: float32, as it runs
    closed = jax.make_jaxpr(apply)(params, jax.ShapeDtypeStruct(x_shape, jnp.float32))
  if len(closed.jaxpr.outvars) != 1:
    raise ValueError("certify: the model must return one array of logits (K,).")
  b = _Builder()
  ids = [b.new(v.aval) for v in closed.jaxpr.invars]
  out, = b.walk(closed.jaxpr, list(closed.consts), ids)
  nodes = tuple(b.nodes)
  producer = {o: k for k, n in enumerate(nodes) for o in n.outs}
  return Graph(nodes, tuple(ids[:-1]), ids[-1], out, b.shapes, b.dtypes,
               _bounded(nodes, ids[-1]), producer)


def trace(apply, params, x_shape) -> Graph:
  """The graph of `apply(params, x)` for one x of shape `x_shape` (cached)."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  avals = tuple((tuple(np.shape(a)), jnp.dtype(jnp.result_type(a))) for a in leaves)
  return _trace(apply, treedef, avals, tuple(x_shape))


def retype(params: dict, dtype) -> dict:
  """A node's params with float dtypes set to the working dtype, and dots at
  HIGHEST precision (no TF32 on GPUs: the bounds assume exact products). The
  roundings of a model that computes in a narrower float are not lost here:
  `advjax.certify.rounding` bounds each one (the plan lists them)."""
  out = {}
  for k, v in params.items():
    if isinstance(v, np.dtype) and jnp.issubdtype(v, jnp.floating):
      v = jnp.dtype(dtype)
    out[k] = v
  if "precision" in out:
    out["precision"] = jax.lax.Precision.HIGHEST
  return out


def as_dtype(v, dtype):
  """A value in the working dtype when it is a float (ints are left alone)."""
  v = jnp.asarray(v)
  return v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v


def bind(node: Node, args, dtype) -> list:
  """Applies a node to values; always returns a list of outputs."""
  out = node.prim.bind(*[as_dtype(a, dtype) for a in args], **retype(node.params, dtype))
  return list(out) if node.prim.multiple_results else [out]


def constants(g: Graph, leaves, dtype) -> dict:
  """Values of the params and of every variable that does not depend on x."""
  env = {i: as_dtype(a, dtype) for i, a in zip(g.param_ids, leaves)}
  for n in g.nodes:
    if n.outs[0] in g.bounded:
      continue
    for o, v in zip(n.outs, bind(n, [read(env, i) for i in n.ins], dtype)):
      env[o] = v
  return env


def read(env: dict, ref):
  """The value of a variable id or a literal."""
  return ref.value if isinstance(ref, Lit) else env[ref]


def evaluate(g: Graph, env: dict, x, dtype) -> dict:
  """Values of every bounded variable at the input x (the clean forward pass)."""
  vals = dict(env)
  vals[g.x_id] = x
  for n in g.nodes:
    if n.outs[0] in g.bounded:
      for o, v in zip(n.outs, bind(n, [read(vals, i) for i in n.ins], dtype)):
        vals[o] = v
  return vals
