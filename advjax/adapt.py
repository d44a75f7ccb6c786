"""Any JAX model as one pure per-example function apply(params, x) -> logits (§4.1).

The attack differentiates the logits of one example, vmaps that once over the
batch, and jit-compiles the whole c search with the weights as *arguments*, so
that a second call with other weights of the same shapes compiles nothing and
big weights are never folded into the program as constants. `wrap` brings every
kind of model to that form:

* a pair `(apply_fn, params)` with `apply_fn(params, x_batch) -> (B, K)`: Flax
  linen (`module.apply` with its variables), Haiku (`transformed.apply`),
  advjax (`Model.apply`);
* a Flax NNX module, called on a batch (`nnx.split` into graph and state);
* an Equinox module, called on ONE example, equinox's unbatched convention
  (`eqx.partition` into arrays and the rest);
* a plain function `f(x_batch) -> (B, K)`. It is traced once per input shape
  (`jax.make_jaxpr`, with `jax.disable_jit` so that the arrays a jitted closure
  captured are visible) and its closed-over arrays become the params; two
  closures that compute the same program share one compiled attack.

`fingerprint` names a wrapped model by its traced computation and its weights
(the resume check of `advjax.runs.driver`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from advjax import criteria


class Wrapped(NamedTuple):
  """A model as `apply(params, x) -> logits (K,)` for one example x.

  Attributes:
    apply: hashable (static under jit); equal for equal computations.
    params: the pytree of arrays `apply` takes (weights, or a function's
      closed-over arrays).
    kind: 'pair', 'nnx', 'equinox' or 'function'.
  """
  apply: Callable
  params: Any
  kind: str


class _Batched:
  """apply_fn(params, x[None])[0]: a batched model seen one example at a time.

  Equal (one compilation) for equal `apply_fn`, where a bound method counts
  as its function and its object by value: Python compares bound methods by
  the object's identity, so `get_model("conv").apply` of two equal models, or
  a Flax module's `apply` on a module built again, compiled the attack (and
  a certificate) once per object (the experiments' tables: 3–6 times).
  """

  def __init__(self, fn: Callable):
    self.fn = fn
    self.key = _callable_key(fn)

  def __call__(self, params, x):
    return self.fn(params, x[None])[0]

  def __hash__(self):
    return hash(self.key)

  def __eq__(self, other):
    return isinstance(other, _Batched) and other.key == self.key


def _callable_key(fn: Callable) -> Any:
  """fn, or (its function, its object) for a bound method of a dataclass whose
  generated __eq__ compares every field (advjax Models, Flax linen modules): an
  object with a hand-written __eq__ may leave out state its method reads, and
  keeps the identity key (a shared compilation would bake in another's state)."""
  owner = getattr(fn, "__self__", None)
  params = getattr(owner, "__dataclass_params__", None)
  if inspect.ismethod(fn) and dataclasses.is_dataclass(owner) and params is not None \
      and params.eq and not isinstance(owner, type):
    try:
      hash(owner)
      return ("method", fn.__func__, owner)
    except TypeError:
      pass
  return fn


@dataclasses.dataclass(frozen=True)
class _NNX:
  """An NNX module rebuilt from its graph definition and a state."""
  graphdef: Any

  def __call__(self, state, x):
    from flax import nnx  # pylint: disable=import-outside-toplevel
    return nnx.merge(self.graphdef, state)(x[None])[0]


class _Equinox:
  """An Equinox module rebuilt from its arrays and its static half.

  Hashed and compared as equinox's `filter_jit` does, by the static half's tree
  structure and leaves, so that a module with list fields (equinox's README
  shape) is a static jit argument like any other.
  """

  def __init__(self, static: Any):
    leaves, self.treedef = jax.tree_util.tree_flatten(static)
    self.leaves = tuple(leaves)
    self.key = (self.treedef, tuple(_hashable(v) for v in leaves))

  def __call__(self, params, x):
    import equinox as eqx  # pylint: disable=import-outside-toplevel
    return eqx.combine(params, jax.tree_util.tree_unflatten(self.treedef, self.leaves))(x)

  def __hash__(self):
    return hash(self.key)

  def __eq__(self, other):
    return isinstance(other, _Equinox) and other.key == self.key


def _hashable(v: Any) -> Any:
  """v itself where hashable, else its identity (an unhashable static leaf)."""
  try:
    hash(v)
    return v
  except TypeError:
    return ("id", id(v))


class _Program:
  """A plain function's traced program; its hoisted constants are the params.

  Equality (and so jit's compile cache) is by the printed program plus a digest
  of any constant left inside a sub-program, so closures over other arrays of
  the same shapes share one compilation, and nothing else does.
  """

  def __init__(self, closed: Any, example_shape: tuple[int, ...]):
    self.jaxpr = closed.jaxpr
    self.key = (str(closed.jaxpr), _inner_consts_digest(closed.jaxpr),
                tuple(example_shape))

  def __call__(self, consts, x):
    out, = jax.core.eval_jaxpr(self.jaxpr, consts, x[None])  # one output
    return out[0]

  def __hash__(self):
    return hash(self.key)

  def __eq__(self, other):
    return isinstance(other, _Program) and other.key == self.key


def _inner_consts_digest(jaxpr) -> str:
  """Digest of constants held by closed sub-programs (not hoisted by tracing)."""
  h = hashlib.sha1()
  for eqn in jaxpr.eqns:
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (tuple, list)) else (v,)):
        if hasattr(sub, "consts") and hasattr(sub, "jaxpr"):  # a ClosedJaxpr
          for c in sub.consts:
            _update(h, c)
          h.update(_inner_consts_digest(sub.jaxpr).encode())
        elif hasattr(sub, "eqns"):  # an open Jaxpr
          h.update(_inner_consts_digest(sub).encode())
  return h.hexdigest()


def _is_module(model, package: str, attr: str) -> bool:
  """isinstance(model, package.attr) without importing the package first."""
  mod = sys.modules.get(package)
  return mod is not None and isinstance(model, getattr(mod, attr))


def wrap(model: Any, example_shape: tuple[int, ...]) -> Wrapped:
  """The per-example view of `model` (a pair, NNX or Equinox module, or function).

  Args:
    model: see the module docstring.
    example_shape: the shape of ONE input (no batch axis), for tracing.

  Raises:
    TypeError: `model` is none of the supported kinds.
  """
  if _is_module(model, "equinox", "Module"):
    import equinox as eqx  # pylint: disable=import-outside-toplevel
    params, static = eqx.partition(model, eqx.is_array)
    return Wrapped(_Equinox(static), params, "equinox")
  if _is_module(model, "flax.nnx", "Module"):
    from flax import nnx  # pylint: disable=import-outside-toplevel
    graphdef, state = nnx.split(model)
    return Wrapped(_NNX(graphdef), state, "nnx")
  if isinstance(model, tuple) and len(model) == 2 and callable(model[0]):
    return Wrapped(_Batched(model[0]), model[1], "pair")
  if callable(model):
    spec = jax.ShapeDtypeStruct((1,) + tuple(example_shape), jnp.float32)
    with jax.disable_jit():  # inline jitted closures so their arrays are hoisted
      closed = jax.make_jaxpr(model)(spec)
    return Wrapped(_Program(closed, example_shape), list(closed.consts), "function")
  raise TypeError(
      f"model of type {type(model).__name__} is not supported: pass a function "
      "f(x) -> logits, a pair (apply_fn, params) with apply_fn(params, x), a "
      "Flax NNX module or an Equinox module.")


def batched(apply: Callable) -> Callable:
  """logits(params, x (B, ...)) -> (B, K): the per-example apply, vmapped once."""
  return jax.vmap(apply, in_axes=(None, 0))


@functools.partial(jax.jit, static_argnums=0)
def logits(apply: Callable, params, x) -> jax.Array:
  """Batched logits (B, K) of a per-example `apply`, compiled once per apply."""
  return batched(apply)(params, x)


def labels_or_prediction(apply: Callable, params, x, label=None) -> jax.Array:
  """`label` where given, else the model's prediction on x (int32): the labels
  an untargeted job leaves, or a certificate certifies."""
  if label is not None:
    return label
  return criteria.prediction(logits(apply, params, jnp.asarray(x)))


def _update(h, a) -> None:
  """Feeds one array (shape, dtype, bytes) into a hash; None counts as absent."""
  if a is None:
    h.update(b"none")
    return
  a = np.ascontiguousarray(jax.device_get(a))
  h.update(str((a.shape, a.dtype)).encode())
  h.update(a.tobytes())


def digest(*arrays) -> str:
  """sha1 of arrays' shapes, dtypes and bytes: the package's one array digest."""
  h = hashlib.sha1()
  for a in arrays:
    _update(h, a)
  return h.hexdigest()


def fingerprint(w: Wrapped, example_shape: tuple[int, ...]) -> str:
  """sha1 of the model's traced per-example computation and of its weights.

  Stable across processes (no object addresses): the program text comes from
  `jax.make_jaxpr` of `apply` on abstract params and input.
  """
  h = hashlib.sha1(w.kind.encode())
  spec = jax.ShapeDtypeStruct(tuple(example_shape), jnp.float32)
  pspec = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), w.params)
  with jax.disable_jit():
    closed = jax.make_jaxpr(w.apply)(pspec, spec)
  h.update(str(closed.jaxpr).encode())
  h.update(_inner_consts_digest(closed.jaxpr).encode())
  for c in closed.consts:
    _update(h, c)
  # Leaf paths, not str(treedef): a treedef may print function addresses.
  for path, a in jax.tree_util.tree_leaves_with_path(w.params):
    h.update(jax.tree_util.keystr(path).encode())
    _update(h, a)
  return h.hexdigest()
