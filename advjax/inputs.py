"""Every input check, in one place: model, x, box, targets, labels → one `Problem`.

The attack (`advjax.attack`), DDN, the certificate and the driver call
`problem` on host arrays before anything is compiled, so a bad job is refused
with one line that names what is wrong and what to pass, and the jitted parts
never inspect (possibly sharded) arrays on the host. The model is wrapped
here, once (`advjax.adapt.wrap`), and its convolutions' input gradients are put
on XLA:CPU's fast path here, once (`advjax.platform.convgrad`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from advjax import adapt
from advjax.platform import convgrad


class Problem(NamedTuple):
  """A validated batch, box and model.

  Attributes:
    apply: per-example logits apply(params, x) -> (K,), hashable, with fast
      convolution gradients on the CPU.
    params: its arrays (jit arguments).
    num_classes: K (>= 2).
    x: float32 inputs (N, ...) inside the box.
    lo, hi: float32 bounds shaped like one input, or (N, ...) per example.
    target, label: (N,) int32 labels in [0, K), or None.
    model: the model as wrapped (`adapt.Wrapped`), which names it (fingerprint).
  """
  apply: Callable
  params: Any
  num_classes: int
  x: np.ndarray
  lo: np.ndarray
  hi: np.ndarray
  target: Any
  label: Any
  model: adapt.Wrapped

  @property
  def n(self) -> int:
    return len(self.x)

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x.shape[1:])

  @property
  def per_example_box(self) -> bool:
    return self.lo.ndim == self.x.ndim


def batch_of(x, name: str = "x") -> np.ndarray:
  """x as a float32 batch (N, ...) of finite real numbers; raises naming the fault."""
  a = np.asarray(x)
  if a.dtype == object or not (np.issubdtype(a.dtype, np.floating)
                               or np.issubdtype(a.dtype, np.integer)
                               or a.dtype == bool):
    raise ValueError(f"{name} has dtype {a.dtype}; pass real numbers (float32 images "
                     "in the box).")
  if a.ndim < 2:
    raise ValueError(f"{name} has shape {a.shape}; it must be a batch (B, ...) with a "
                     "leading batch dimension (one example: x[None]).")
  a = a.astype(np.float32)
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name} contains NaN or inf; inputs must be finite and inside the box.")
  return a


def box(bounds, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(lo, hi) broadcast to one input's shape, or to the batch's (N, ...) when they
  differ per example; raises unless they fit, are numbers and lo <= hi."""
  try:
    lo, hi = bounds
  except (TypeError, ValueError) as e:
    raise ValueError(f"bounds={bounds!r} must be a pair (lo, hi) of numbers or "
                     "arrays, e.g. bounds=(0.0, 1.0).") from e
  try:
    lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
  except (TypeError, ValueError) as e:
    raise ValueError(f"bounds={bounds!r}: lo and hi must be numbers or numeric "
                     "arrays, e.g. bounds=(0.0, 1.0).") from e
  one, full = x.shape[1:], x.shape
  for shape in (one, full):
    try:
      lo_b, hi_b = np.broadcast_to(lo, shape), np.broadcast_to(hi, shape)
      break
    except ValueError:
      continue
  else:
    raise ValueError(f"bounds of shapes {lo.shape} and {hi.shape} broadcast neither to "
                     f"one input {one} nor to the batch {full}.")
  if np.isnan(lo_b).any() or np.isnan(hi_b).any() or (lo_b > hi_b).any():
    raise ValueError("bounds must satisfy lo <= hi everywhere (no NaN).")
  return lo_b, hi_b


def check_inside(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bounds) -> None:
  """Raises unless x lies inside [lo, hi]."""
  below, above = x < lo, x > hi
  if below.any() or above.any():
    n = int((below | above).reshape(len(x), -1).any(1).sum())
    raise ValueError(
        f"{n} of {len(x)} inputs have values outside the box bounds={_show(bounds)} "
        f"(x in [{x.min():g}, {x.max():g}]): rescale x to the box, or pass "
        "bounds=(lo, hi) for your input range.")


def _show(bounds) -> str:
  """Short text of the bounds for error messages."""
  return "(" + ", ".join(f"{float(v):g}" if np.ndim(v) == 0 else f"array{np.shape(v)}"
                         for v in bounds) + ")"


def labels(t, n: int, K: int, name: str) -> jax.Array:
  """`t` as (n,) int32 labels in [0, K); raises naming what is wrong."""
  t = np.asarray(t)
  if t.shape != (n,):
    raise ValueError(f"{name} has shape {t.shape} but x has batch size {n}; {name} "
                     f"must be (B,) = ({n},).")
  if not (np.issubdtype(t.dtype, np.integer) or (t.size == 0 and t.dtype == np.float64)):
    raise ValueError(f"{name} has dtype {t.dtype}; labels must be integers "
                     "(a float label such as 2.7 is never truncated).")
  if t.size and (t.min() < 0 or t.max() >= K):
    raise ValueError(f"{name} has labels in [{t.min()}, {t.max()}] but the model has "
                     f"K = {K} classes: labels must be in [0, {K}).")
  return jnp.asarray(t, jnp.int32)


def key_of(key):
  """A PRNG key, or ValueError saying what to pass."""
  if key is None:
    return None
  try:
    ok = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) or (
        key.dtype == jnp.uint32 and key.shape[-1:] == (2,))
  except AttributeError:
    ok = False
  if not ok:
    raise ValueError(f"key={key!r} is not a PRNG key; pass jax.random.key(0) or "
                     "jax.random.PRNGKey(0).")
  return key


def _first_line(e: Exception) -> str:
  s = str(e).strip().splitlines()
  return f"{type(e).__name__}: {s[0] if s else ''}"


def num_classes(w: adapt.Wrapped, shape: tuple[int, ...]) -> int:
  """K from the per-example logits' shape; raises unless they are (K,), K >= 2."""
  declared = getattr(getattr(getattr(w.apply, "fn", None), "__self__", None),
                     "input_shape", None)
  if declared is not None and tuple(declared) != shape:
    raise ValueError(f"x has examples of shape {shape} but the model takes "
                     f"{tuple(declared)}; for one example pass x[None].")
  try:
    out = jax.eval_shape(w.apply, w.params, jax.ShapeDtypeStruct(shape, jnp.float32))
  except Exception as e:  # any failure of the user's model: say what was tried
    if "TraceContext" in type(e).__name__ or "Trace" in type(e).__name__:
      raise ValueError(_TRAIN_MODE + f" ({_first_line(e)})") from e
    raise ValueError(f"the model failed on one example of shape {shape} (is the first "
                     f"axis of x the batch? for one example pass x[None]): "
                     f"{_first_line(e)}") from e
  if not hasattr(out, "shape") or len(out.shape) != 1:
    raise ValueError(f"the model maps one input to {getattr(out, 'shape', type(out))}; "
                     "it must give logits: (B, K) for a batch, (K,) for one example.")
  if out.shape[0] < 2:
    raise ValueError(f"the model gives {out.shape[0]} logit per example; a classifier "
                     "for an attack or a certificate needs K >= 2 classes.")
  return int(out.shape[0])


_TRAIN_MODE = ("the model's output for an example depends on the rest of the batch "
               "(BatchNorm or dropout in training mode?): switch it to evaluation mode "
               "(NNX: model.eval(); linen: train=False / use_running_average=True)")


def _batched_call(model: Any, w: adapt.Wrapped):
  """The model's own batched call xs -> (B, K), jitted once per model where its
  function is hashable (weights as arguments); None for Equinox (per example)."""
  if w.kind == "pair":
    fn = _jitted(model[0])
    return lambda xs: fn(model[1], xs)
  if w.kind == "nnx":
    from flax import nnx  # pylint: disable=import-outside-toplevel
    return lambda xs: nnx.merge(w.apply.graphdef, w.params)(xs)  # a copy: no state change
  if w.kind == "function":
    return _jitted(model)
  return None


def _jitted(fn):
  """jax.jit(fn), cached per function (a new jit per call would recompile)."""
  try:
    return _jit_cached(fn)
  except TypeError:  # unhashable: jit it afresh
    return jax.jit(fn)


@functools.lru_cache(maxsize=64)
def _jit_cached(fn):
  return jax.jit(fn)


def check_batch_independent(model: Any, w: adapt.Wrapped, x: np.ndarray,
                            lo: np.ndarray, hi: np.ndarray) -> None:
  """Refuses a model whose output for an example depends on the rest of the batch.

  The attack differentiates one example at a time (vmapped), so such a model
  would be attacked as a different function from the one the user calls. Once,
  on up to 8 examples (and the box's centre, so that there are two).
  """
  call = _batched_call(model, w)
  if call is None:
    return
  centre = ((lo.reshape((-1,) + x.shape[1:])[:1] + hi.reshape((-1,) + x.shape[1:])[:1]) / 2)
  xs = np.concatenate([x[:8], centre.astype(np.float32)])
  try:
    a = np.asarray(call(jnp.asarray(xs)))
  except Exception as e:  # the user's own batched call failed: say so
    raise ValueError(f"the model failed on a batch of shape {xs.shape}: "
                     f"{_first_line(e)}") from e
  b = np.asarray(adapt.logits(w.apply, w.params, jnp.asarray(xs)))
  if a.shape != b.shape:
    raise ValueError(f"the model maps a batch {xs.shape} to {a.shape} but one example at "
                     f"a time to {b.shape[1:]}; it must give logits (B, K).")
  scale = max(float(np.nanmax(np.abs(b))) if np.isfinite(b).any() else 0.0, 1e-30)
  if np.nanmax(np.abs(a - b), initial=0.0) > batch_tolerance(w, x.shape[1:]) * scale:
    raise ValueError(_TRAIN_MODE + ".")


def batch_tolerance(w: adapt.Wrapped, shape) -> float:
  """How far (relative to the logits' scale) a batched call may differ from
  one-at-a-time calls: 1e-3, or 8 eps of the narrowest float the model
  computes in (bfloat16's resolution, 2^-7, is above 1e-3; the two calls may
  round differently in every layer)."""
  eps = np.finfo(np.float32).eps
  for d in float_dtypes(w.apply, w.params, shape):
    eps = max(eps, float(jnp.finfo(d).eps))
  return max(1e-3, 8 * eps)


def float_dtypes(apply, params, shape) -> set:
  """The float dtypes of every value `apply(params, x)` computes for one x."""
  spec = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
  jaxpr = jax.make_jaxpr(apply)(params, spec).jaxpr
  out, todo = set(), [jaxpr]
  while todo:
    j = todo.pop()
    for eqn in j.eqns:
      out.update(jnp.dtype(v.aval.dtype) for v in eqn.outvars
                 if jnp.issubdtype(getattr(v.aval, "dtype", np.int32), jnp.floating))
      for p in eqn.params.values():
        for sub in (p if isinstance(p, (tuple, list)) else (p,)):
          sub = getattr(sub, "jaxpr", sub)
          if hasattr(sub, "eqns"):
            todo.append(sub)
  return out


@jax.jit
def _finite_rows(logits):
  return jnp.all(jnp.isfinite(logits), -1)


def check_finite(apply, params, x, index=None) -> None:
  """Raises when the model's logits on x are NaN or inf (a broken model), naming
  the examples by `index` (dataset indices) when given."""
  ok = np.asarray(_finite_rows(adapt.logits(apply, params, jnp.asarray(x))))
  bad = np.flatnonzero(~ok)
  if len(bad):
    names = bad if index is None else np.asarray(index)[bad]
    raise ValueError(f"the model gives non-finite logits (NaN/inf) for {len(bad)} of "
                     f"{len(x)} inputs ({'examples' if index is not None else 'rows'} "
                     f"{names[:5].tolist()}...): its weights or computation are broken; "
                     "no attack or certificate can succeed on it.")


BOX = (0.0, 1.0)  # the default box of every public entry point: pixels in [0, 1]


def problem(model: Any, x, bounds=BOX, *, target=None, label=None,
            check_logits: bool = True) -> Problem:
  """Validates a job's inputs (§4.1): x (N, ...) in the box, the box (one input's
  shape or per example), the model (K >= 2 logits, batch-independent, finite on
  x), targets and labels.

  Raises:
    ValueError: one line naming what is wrong and what to pass.
  """
  x = batch_of(x)
  lo, hi = box(bounds, x)
  check_inside(x, lo, hi, bounds)
  try:
    w = adapt.wrap(model, x.shape[1:])
  except TypeError as e:
    if "not supported" in str(e):
      raise
    raise ValueError(f"the model failed on one example of shape {x.shape[1:]} (is the "
                     "first axis of x the batch? for one example pass x[None]): "
                     f"{_first_line(e)}") from e
  K = num_classes(w, x.shape[1:])
  target = None if target is None else labels(target, len(x), K, "target")
  label = None if label is None else labels(label, len(x), K, "label")
  apply = convgrad.canonical(w.apply)
  if len(x):
    check_batch_independent(model, w, x, lo, hi)
    if check_logits:
      check_finite(apply, w.params, x)
  return Problem(apply, w.params, K, x, lo, hi, target, label, w)


def default_labels(pb: Problem) -> jax.Array:
  """The labels an untargeted job leaves: `pb.label`, else the prediction on x."""
  return adapt.labels_or_prediction(pb.apply, pb.params, pb.x, pb.label)


def empty_fields(pb: Problem, fields) -> list[np.ndarray]:
  """Zero-length arrays for a result of 0 examples (x-shaped for x_adv and r)."""
  like_x = {"x_adv", "r"}
  ints = {"target", "iterations", "solves", "passes"}
  return [pb.x if f in like_x else np.zeros(0, np.int32 if f in ints else
                                            bool if f == "success" else np.float32)
          for f in fields]


def integer(value, name: str, low: int = 1) -> int:
  """`value` as an int if it is an integer >= low (not a bool); else
  ValueError "name=value: must be an integer >= low."."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
      or value < low:
    raise ValueError(f"{name}={value!r}: must be an integer >= {low}.")
  return int(value)
