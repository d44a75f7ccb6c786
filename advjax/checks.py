"""Input checks of the §4.1 attack, on host arrays, before anything is compiled.

`prepare` validates a batch, the box and the model once and returns what the
jitted attack needs (`Prepared`); `advjax.attacks.lbfgs` and `advjax.driver`
both call it, so a job is refused with a clear message before any attack runs,
and the jitted part never inspects (possibly sharded) arrays on the host.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from advjax import adapt


class Prepared(NamedTuple):
  """A validated model, box and options.

  Attributes:
    apply: per-example logits apply(params, x) -> (K,) (hashable).
    params: its arrays (jit arguments).
    num_classes: K.
    lo, hi: float32 bounds of the box, shaped like one input.
    options: the checked `AttackOptions`.
    kind: the model kind ('pair', 'nnx', 'equinox', 'function').
    input_shape: the shape of one input.
  """
  apply: Callable
  params: Any
  num_classes: int
  lo: np.ndarray
  hi: np.ndarray
  options: Any
  kind: str
  input_shape: tuple[int, ...]


def _box(bounds, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
  """(lo, hi) broadcast to one input's shape; raises if they do not fit."""
  try:
    lo, hi = bounds
  except (TypeError, ValueError) as e:
    raise ValueError(f"bounds={bounds!r} must be a pair (lo, hi).") from e
  try:
    lo = np.broadcast_to(np.asarray(lo, np.float32), shape)
    hi = np.broadcast_to(np.asarray(hi, np.float32), shape)
  except ValueError as e:
    raise ValueError(f"bounds of shapes {np.shape(lo)} and {np.shape(hi)} do not "
                     f"broadcast to one input of shape {shape}.") from e
  if np.isnan(lo).any() or np.isnan(hi).any() or (lo > hi).any():
    raise ValueError("bounds must satisfy lo <= hi everywhere (no NaN).")
  return lo, hi


def _check_x(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bounds) -> None:
  """Raises unless x is finite and inside [lo, hi]."""
  if not np.all(np.isfinite(x)):
    raise ValueError("x contains NaN or inf; inputs must be finite and inside the box.")
  below, above = x < lo, x > hi
  if below.any() or above.any():
    n = int((below | above).reshape(len(x), -1).any(1).sum())
    raise ValueError(
        f"{n} of {len(x)} inputs have values outside the box bounds="
        f"{_show(bounds)} (x in [{x.min():g}, {x.max():g}]): rescale x to the "
        "box, or pass bounds=(lo, hi) for your input range.")


def _show(bounds) -> str:
  """Short text of the bounds for error messages."""
  return "(" + ", ".join(f"{v:g}" if np.ndim(v) == 0 else f"array{np.shape(v)}"
                         for v in bounds) + ")"


def _declared_shape(w: adapt.Wrapped):
  """The input shape an advjax `Model.apply` declares, else None."""
  fn = getattr(w.apply, "fn", None)
  return getattr(getattr(fn, "__self__", None), "input_shape", None)


def _num_classes(w: adapt.Wrapped, x: np.ndarray) -> int:
  """K from the per-example logits' shape; raises unless they are (K,)."""
  shape = tuple(x.shape[1:])
  declared = _declared_shape(w)
  if declared is not None and tuple(declared) != shape:
    raise ValueError(f"x has shape {x.shape} but the model takes (B, "
                     f"{', '.join(map(str, declared))}); for one example pass x[None].")
  spec = jax.ShapeDtypeStruct(shape, jnp.float32)
  try:
    out = jax.eval_shape(w.apply, w.params, spec)
  except Exception as e:  # any failure of the user's model: say what was tried
    raise ValueError(
        f"the model failed on one input of shape {shape} (x has shape {x.shape}; "
        f"is the first axis the batch? for one example pass x[None]): {e}") from e
  if not hasattr(out, "shape") or len(out.shape) != 1:
    raise ValueError(f"the model maps one input to {getattr(out, 'shape', type(out))}; "
                     "it must give logits: (B, K) for a batch (K,) for one example.")
  return int(out.shape[0])


@jax.jit
def _finite_rows(logits):
  return jnp.all(jnp.isfinite(logits), -1)


def nonfinite_rows(p: Prepared, x) -> np.ndarray:
  """Indices of the rows of x whose logits are not all finite."""
  ok = np.asarray(_finite_rows(adapt.logits(p.apply, p.params, jnp.asarray(x))))
  return np.flatnonzero(~ok)


def check_finite(p: Prepared, x) -> None:
  """Raises when the model's logits on x are NaN or inf (a broken model)."""
  bad = nonfinite_rows(p, x)
  if len(bad):
    raise ValueError(f"the model gives non-finite logits (NaN/inf) for {len(bad)} of "
                     f"{len(x)} inputs (rows {bad[:5].tolist()}...): its weights or "
                     "computation are broken; no attack can succeed on it.")


def prepare(model: Any, x, bounds, options, check_logits: bool = True) -> Prepared:
  """Validates x (B, ...) in the box, the box, the model and its outputs (§4.1).

  Args:
    model: any model kind of `advjax.adapt.wrap`.
    x: a host batch (B, ...) (or a sample of the job's inputs).
    bounds: (lo, hi) broadcastable to one input.
    options: checked `AttackOptions`.
    check_logits: also run the model on x and refuse non-finite logits.

  Raises:
    ValueError: x not a batch, not finite or outside the box; bad bounds; the
      model fails, returns other than (B, K), or gives non-finite logits.
  """
  if np.ndim(x) < 2:
    raise ValueError(f"x has shape {np.shape(x)}; it must be a batch (B, ...) "
                     "with a leading batch dimension (one example: x[None]).")
  x = np.asarray(x, np.float32)
  shape = tuple(x.shape[1:])
  lo, hi = _box(bounds, shape)
  _check_x(x, lo, hi, bounds)
  w = adapt.wrap(model, shape)
  p = Prepared(w.apply, w.params, _num_classes(w, x), lo, hi, options, w.kind, shape)
  if check_logits and len(x):
    check_finite(p, x)
  return p


def check_labels(t, B: int, K: int, name: str) -> jax.Array:
  """`t` as (B,) int32 labels in [0, K); raises naming what is wrong."""
  t = np.asarray(t)
  if t.shape != (B,):
    raise ValueError(f"{name} has shape {t.shape} but x has batch size "
                     f"{B}; {name} must be (B,) = ({B},).")
  if not np.issubdtype(t.dtype, np.integer):
    raise ValueError(f"{name} has dtype {t.dtype}; labels must be integers "
                     "(a float label such as 2.7 is never truncated).")
  if t.size and (t.min() < 0 or t.max() >= K):
    raise ValueError(f"{name} has labels in [{t.min()}, {t.max()}] but the "
                     f"model has K = {K} classes: labels must be in [0, {K}).")
  return jnp.asarray(t, jnp.int32)
