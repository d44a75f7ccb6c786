"""Training with optax: weight decay λ per layer, Adam/SGD or full-batch L-BFGS.

The loss is the paper's regularised cross-entropy (§4.2):
    L(θ) = mean_i CE(f_θ(x_i), y_i) + ½ Σ_k λ_k Σ W_k²,
λ on the kernels only, summed (not averaged) over weights, added to the *mean*
cross-entropy: the UFLDL convention of the paper's era. Measured on FC10(λ) at
convergence, it puts FC10(1) and FC10(1e-2) nearest the paper's Table 1 errors
(BUILD_NOTES.md has the comparison with λ·Σw²).

Runs are deterministic given `seed` (shuffling keys come from fold_in(seed, epoch)),
and resumable: with `ckpt_dir`, the full state is written after every epoch and a
rerun continues from the last finished epoch. (An `augment` callback's own state,
such as an adversarial pool, is not saved: a resumed run rebuilds it.)
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from tqdm.auto import tqdm

from advjax import checkpoint
from advjax import data as data_lib
from advjax import models

STATE = "state.msgpack"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimiser and schedule. `optimizer` is 'adam', 'sgd' or 'lbfgs' (full batch:
  one L-BFGS step with its own line search per epoch; lr, schedule and
  batch_size do not apply)."""
  optimizer: str = "adam"
  lr: float = 1e-3
  momentum: float = 0.9
  epochs: int = 20
  batch_size: int = 128
  seed: int = 0
  frozen: tuple[str, ...] = ()  # layer names whose parameters stay fixed
  schedule: str = "constant"  # or 'cosine': lr decays to 0 over all steps
  steps_per_epoch: int = 0  # for 'cosine'; 0 means n_train // batch_size


class TrainResult(NamedTuple):
  params: Any
  history: list[dict[str, float]]


def loss_fn(model: models.Model, params, x, y, rng=None) -> jax.Array:
  """Mean cross-entropy plus ½ Σ_k λ_k Σ W_k² (§4.2)."""
  logits = model.apply(params, x, train=rng is not None, rng=rng)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return ce + model.weight_penalty(params)


def make_optimizer(cfg: TrainConfig, params, n: int = 0
                   ) -> optax.GradientTransformation:
  """The optimiser of `cfg` (n: training-set size, for the schedule's length)."""
  lr = cfg.lr
  if cfg.schedule == "cosine":
    steps = cfg.epochs * (cfg.steps_per_epoch or max(1, n // cfg.batch_size))
    lr = optax.cosine_decay_schedule(cfg.lr, steps)
  elif cfg.schedule != "constant":
    raise ValueError(f"schedule {cfg.schedule!r}: use 'constant' or 'cosine'.")
  if cfg.optimizer == "adam":
    opt = optax.adam(lr)
  elif cfg.optimizer == "sgd":
    opt = optax.sgd(lr, momentum=cfg.momentum)
  elif cfg.optimizer == "lbfgs":
    opt = optax.lbfgs()
  else:
    raise ValueError(f"optimizer {cfg.optimizer!r}: use 'adam', 'sgd' or 'lbfgs'.")
  if not cfg.frozen:
    return opt
  labels = {k: ("frozen" if k in cfg.frozen else "train") for k in params}
  return optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()},
                               labels)


def error_rate(model: models.Model, params, x, y, batch_size: int = 500) -> float:
  """Share of misclassified examples, in batches."""
  return float(np.mean(predict(model, params, x, batch_size) != np.asarray(y)))


def predict(model: models.Model, params, x, batch_size: int = 500) -> np.ndarray:
  """Argmax labels of `x` in fixed-size padded batches (one compile per model)."""
  fn = _predict_fn(model)
  out = []
  for i in range(0, len(x), batch_size):
    xb = x[i:i + batch_size]
    if len(xb) < batch_size:  # pad the last batch only: one compile per model
      xb = np.concatenate([xb, np.zeros((batch_size - len(xb),) + x.shape[1:], x.dtype)])
    out.append(np.asarray(fn(params, xb)))
  return np.concatenate(out)[:len(x)] if out else np.zeros(0, np.int32)


_PREDICT_CACHE: dict = {}


def _predict_fn(model: models.Model) -> Callable:
  """A jitted argmax per model (cached so repeated calls never retrace)."""
  if model not in _PREDICT_CACHE:
    _PREDICT_CACHE[model] = jax.jit(lambda p, x: jnp.argmax(model.apply(p, x), -1))
  return _PREDICT_CACHE[model]


class HiddenPool(NamedTuple):
  """Examples given at a hidden layer's output: they train only the layers above.

  `weight` scales their mean CE against the clean minibatch's (1: equal).
  """
  layer: str
  h: np.ndarray
  y: np.ndarray
  weight: float = 1.0


def _hidden_loss(model, params, pool_batch, rng) -> jax.Array:
  """Mean CE of the layers above `layer` on hidden-layer examples (§4.2)."""
  layer, h, y = pool_batch
  logits = model.apply_from(params, h, layer, train=rng is not None, rng=rng)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _epoch_fn(model, opt, cfg: TrainConfig, n: int, layer: str | None = None):
  """One epoch of minibatch steps: a Python loop over one jitted step.

  Not a `lax.scan`: XLA:CPU runs convolutions inside a while loop ~25× slower
  than at top level (measured: conv net, 3.7 s vs 0.15 s per step of 64).
  With `layer`, each step adds a minibatch of a `HiddenPool` at that layer.
  """
  steps = n // cfg.batch_size
  has_dropout = any(L.kind == "dropout" for L in model.layers)

  @jax.jit
  def step(params, opt_state, x, y, key, hb=None, hy=None, hw=1.0):
    rng = key if has_dropout else None
    def loss(p):
      out = loss_fn(model, p, x, y, rng)
      return out if hb is None else out + hw * _hidden_loss(model, p, (layer, hb, hy), rng)
    value, g = jax.value_and_grad(loss)(params)
    upd, opt_state = opt.update(g, opt_state, params)
    return optax.apply_updates(params, upd), opt_state, value

  def epoch(params, opt_state, x, y, key, hidden: HiddenPool | None = None):
    order = np.asarray(jax.random.permutation(key, n))[: steps * cfg.batch_size]
    x, y, losses = np.asarray(x), np.asarray(y), []
    hrng = np.random.default_rng(np.asarray(key, np.uint32).ravel())
    for i, idx in enumerate(order.reshape(steps, cfg.batch_size)):
      extra = ()
      if hidden is not None:
        j = hrng.integers(0, len(hidden.y), cfg.batch_size)
        extra = (hidden.h[j], hidden.y[j], jnp.float32(hidden.weight))
      params, opt_state, loss = step(params, opt_state, x[idx], y[idx],
                                     jax.random.fold_in(key, i), *extra)
      losses.append(loss)
    return params, opt_state, jnp.mean(jnp.stack(losses))
  return epoch


def _lbfgs_fn(model, opt):
  """One jitted full-batch L-BFGS step (optax.lbfgs with its line search)."""
  value_and_grad = optax.value_and_grad_from_state(
      lambda p, x, y: loss_fn(model, p, x, y))

  @jax.jit
  def step(params, opt_state, x, y, key):
    del key
    loss, g = value_and_grad(params, x, y, state=opt_state)
    upd, opt_state = opt.update(g, opt_state, params, value=loss, grad=g,
                                value_fn=lambda p: loss_fn(model, p, x, y))
    return optax.apply_updates(params, upd), opt_state, loss
  return step


def _check_data(model: models.Model, ds: data_lib.Dataset) -> None:
  """Clear errors for data that does not fit the model."""
  if tuple(ds.x.shape[1:]) != model.input_shape:
    raise ValueError(f"images have shape {ds.x.shape[1:]}, model {model.name} "
                     f"expects {model.input_shape}.")
  if len(ds.x) != len(ds.y):
    raise ValueError(f"{len(ds.x)} images but {len(ds.y)} labels.")
  if not np.all(np.isfinite(ds.x)) or ds.x.min() < 0 or ds.x.max() > 1:
    raise ValueError("images must be finite and in [0, 1]; divide uint8 by 255.")
  if ds.y.min() < 0 or ds.y.max() >= model.num_classes:
    raise ValueError(f"labels must be in [0, {model.num_classes}).")


def train(model: models.Model, ds: data_lib.Dataset, cfg: TrainConfig,
          params=None, ckpt_dir: str | None = None,
          eval_sets: dict[str, data_lib.Dataset] | None = None,
          augment: Callable | None = None, progress: bool = True) -> TrainResult:
  """Trains `model` on `ds` (§4.2), resuming from `ckpt_dir` when it holds state.

  Args:
    model: the network.
    ds: training data.
    cfg: optimiser, epochs, batch size, seed, frozen layers.
    params: initial parameters (default: `model.init(PRNGKey(seed))`).
    ckpt_dir: folder for the per-epoch resumable state (and nothing else).
    eval_sets: named datasets whose error is logged after every epoch.
    augment: optional `augment(epoch, params, ds)` giving the data of an epoch:
      a Dataset, or (Dataset, HiddenPool) whose hidden-layer examples train the
      layers above that layer (adversarial training mixes its pools in here).
    progress: show a tqdm bar over epochs.

  Returns:
    TrainResult(params, history): one dict per epoch (loss and errors).
  """
  _check_data(model, ds)
  key = jax.random.PRNGKey(cfg.seed)
  params = model.init(key) if params is None else params
  unknown = set(cfg.frozen) - set(params)
  if unknown:
    raise ValueError(f"frozen layers {sorted(unknown)} have no parameters; "
                     f"layers with parameters: {sorted(params)}.")
  opt = make_optimizer(cfg, params, len(ds.x))
  state = (params, opt.init(params), 0, [])
  state = _restore(ckpt_dir, state) if ckpt_dir else state
  params, opt_state, start, history = state
  # The first epoch's data fixes the schedule's length: an augmented epoch
  # (input-space adversarial pool) has more steps than `ds` alone. The
  # optimiser state's structure does not depend on that length.
  first = _split(augment(start, params, ds) if augment and start < cfg.epochs
                 else ds)
  if len(first[0].x) != len(ds.x):
    opt = make_optimizer(cfg, params, len(first[0].x))
  fns = {}
  bar = tqdm(range(start, cfg.epochs), disable=not progress, desc=model.name,
             initial=start, total=cfg.epochs)
  for epoch in bar:
    d, hidden = first if epoch == start else _split(
        augment(epoch, params, ds) if augment else ds)
    n = len(d.x) if cfg.optimizer != "lbfgs" else -1
    sig = (n, hidden.layer if hidden else None)
    if sig not in fns:  # one step function per data size and pool layer
      fns[sig] = (_lbfgs_fn(model, opt) if n == -1
                  else _epoch_fn(model, opt, cfg, n, sig[1]))
    extra = (hidden,) if hidden is not None else ()
    params, opt_state, loss = fns[sig](params, opt_state, d.x, d.y,
                                       jax.random.fold_in(key, epoch), *extra)
    row = {"epoch": epoch + 1, "loss": float(loss)}
    for name, e in (eval_sets or {}).items():
      row[f"{name}_err"] = error_rate(model, params, e.x, e.y)
    history.append(row)
    bar.set_postfix({k: round(v, 4) for k, v in row.items() if k != "epoch"})
    if ckpt_dir:
      _save_state(ckpt_dir, (params, opt_state, epoch + 1, history))
  return TrainResult(params, history)


def _split(d) -> tuple[data_lib.Dataset, HiddenPool | None]:
  """An epoch's data as (Dataset, HiddenPool or None)."""
  if isinstance(d, tuple) and len(d) == 2 and isinstance(d[1], HiddenPool):
    return d
  return d, None


def _save_state(folder: str, state) -> None:
  """Writes the resumable state atomically."""
  os.makedirs(folder, exist_ok=True)
  params, opt_state, epoch, history = state
  blob = serialization.to_bytes({"params": params, "opt_state": opt_state,
                                 "epoch": epoch})
  checkpoint.atomic_write(os.path.join(folder, STATE), blob)
  checkpoint.atomic_write(os.path.join(folder, "history.json"),
                          json.dumps(history).encode())


def _restore(folder: str, state):
  """The saved state of `folder` if any, else `state` unchanged."""
  path = os.path.join(folder, STATE)
  if not os.path.exists(path):
    return state
  params, opt_state, _, _ = state
  template = {"params": params, "opt_state": opt_state, "epoch": 0}
  with open(path, "rb") as f:
    try:
      got = serialization.from_bytes(template, f.read())
    except Exception as e:  # corrupt or from another model
      raise checkpoint.CheckpointError(
          f"{path} cannot be restored ({e}); it belongs to another model or "
          "config, or is corrupt. Delete it to start over.") from e
  with open(os.path.join(folder, "history.json")) as f:
    history = json.load(f)
  return got["params"], got["opt_state"], int(got["epoch"]), history


class AEResult(NamedTuple):
  """The autoencoder's encoder ('code' layer params), decoder and epoch losses."""
  encoder: dict
  decoder: dict
  losses: list[float]


def _ae_loss(p, x, lam: float, rho: float, beta: float) -> jax.Array:
  """Sparse autoencoder loss: BCE reconstruction + β·KL(ρ‖ρ̂) + λ·Σ W²."""
  x = x.reshape(len(x), -1)
  h = jax.nn.sigmoid(x @ p["enc"]["kernel"] + p["enc"]["bias"])
  z = h @ p["dec"]["kernel"] + p["dec"]["bias"]
  rec = optax.sigmoid_binary_cross_entropy(z, x).sum(-1).mean()
  q = jnp.clip(h.mean(0), 1e-6, 1 - 1e-6)
  kl = jnp.sum(rho * jnp.log(rho / q) + (1 - rho) * jnp.log((1 - rho) / (1 - q)))
  decay = lam * (jnp.sum(p["enc"]["kernel"] ** 2) + jnp.sum(p["dec"]["kernel"] ** 2))
  return rec + beta * kl + decay


def pretrain_autoencoder(ds: data_lib.Dataset, cfg: TrainConfig,
                         hidden: int = 400, lam: float = 1e-6, rho: float = 0.05,
                         beta: float = 1.0, progress: bool = True) -> AEResult:
  """Trains the sparse sigmoid autoencoder of AE400-10 (§4.2).

  The paper does not fine-tune it: the classifier trains a softmax on the code
  with the encoder frozen (`TrainConfig.frozen=('code',)`).
  """
  m = int(np.prod(ds.x.shape[1:]))
  k1, k2 = jax.random.split(jax.random.PRNGKey(cfg.seed))
  init = jax.nn.initializers.glorot_uniform()
  p = {"enc": {"kernel": init(k1, (m, hidden)), "bias": jnp.zeros(hidden)},
       "dec": {"kernel": init(k2, (hidden, m)), "bias": jnp.zeros(m)}}
  opt = optax.adam(cfg.lr)
  steps = len(ds.x) // cfg.batch_size
  x_all = jnp.asarray(ds.x)

  @jax.jit
  def epoch(p, s, key):
    order = jax.random.permutation(key, len(x_all))[: steps * cfg.batch_size]
    def step(c, idx):
      l, g = jax.value_and_grad(_ae_loss)(c[0], x_all[idx], lam, rho, beta)
      u, s2 = opt.update(g, c[1], c[0])
      return (optax.apply_updates(c[0], u), s2), l
    (p, s), ls = jax.lax.scan(step, (p, s), order.reshape(steps, -1))
    return p, s, ls.mean()

  s, losses = opt.init(p), []
  for e in tqdm(range(cfg.epochs), disable=not progress, desc="autoencoder"):
    p, s, l = epoch(p, s, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), e))
    losses.append(float(l))
  return AEResult(p["enc"], p["dec"], losses)
