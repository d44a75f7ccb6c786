"""Training with optax: weight decay λ per layer, Adam/SGD or full-batch L-BFGS.

The loss is the paper's regularised cross-entropy (§4.2):
    L(θ) = mean_i CE(f_θ(x_i), y_i) + ½ Σ_k λ_k Σ W_k²,
λ on the kernels only, summed (not averaged) over weights, added to the *mean*
cross-entropy: the UFLDL convention of the paper's era. Measured on FC10(λ) at
convergence, it puts FC10(1) and FC10(1e-2) nearest the paper's Table 1 errors
(BUILD_NOTES.md has the comparison with λ·Σw²).

Runs are deterministic given `seed` (shuffling keys come from fold_in(seed, epoch)),
and resumable: with `ckpt_dir`, the full state (parameters, optimiser state and
the state of an `ExtraLoss`, such as an adversarial pool) is written after every
epoch and a rerun continues from the last finished epoch, bit for bit.
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
LR_SCHEDULES = ("constant", "cosine", "decay_after_half")
LR_FINAL = 1e-6  # GloRo's final learning rate ('decay_after_half_to_0.000001')


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
  # 'constant'; 'cosine' (lr decays to 0 over all steps); 'decay_after_half'
  # (GloRo's 'decay_after_half_to_0.000001': lr held for half the steps, then
  # decayed exponentially to LR_FINAL at the last step)
  schedule: str = "constant"
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
  lr, steps = cfg.lr, cfg.epochs * (cfg.steps_per_epoch or max(1, n // cfg.batch_size))
  if cfg.schedule == "cosine":
    lr = optax.cosine_decay_schedule(cfg.lr, steps)
  elif cfg.schedule == "decay_after_half":
    if not cfg.lr > LR_FINAL:
      raise ValueError(f"schedule 'decay_after_half' decays to {LR_FINAL}: need lr above it.")
    half = steps // 2
    lr = optax.join_schedules(
        [optax.constant_schedule(cfg.lr),
         optax.exponential_decay(cfg.lr, max(steps - half, 1), LR_FINAL / cfg.lr)], [half])
  elif cfg.schedule != "constant":
    raise ValueError(f"schedule {cfg.schedule!r}: use one of {LR_SCHEDULES}.")
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


class ExtraLoss(NamedTuple):
  """A generic extra term of the training loss with its own state (§4.2).

  Adversarial training (`advjax.advtrain`) is one: its state is the pool. The
  state is any pytree of arrays; it is saved in the per-epoch checkpoint with
  the parameters, so a resumed run equals an uninterrupted one.

  Attributes:
    init: params -> state (shapes only matter: it is the restore template).
    refresh: (epoch, params, state) -> state, called on the host before each
      epoch (it may run attacks); must be a function of its arguments only.
    loss: (params, state, key, rng) -> scalar, jittable: the term added to
      every minibatch's loss; `key` is a fresh PRNG key per step (to sample a
      minibatch of the state), `rng` the dropout key or None.
    step: optional (params, state, x, y, key, rng) -> (loss, state), jittable:
      when given it is the minibatch's whole loss (cross-entropy and weight
      decay included; `loss` is unused) and its state is carried to the next
      step (power iterations of `advjax.norms.regulariser`; LMT's shifted logits).
  """
  init: Callable[[Any], Any]
  refresh: Callable[[int, Any, Any], Any]
  loss: Callable[[Any, Any, jax.Array, Any], jax.Array]
  step: Callable[..., tuple[jax.Array, Any]] | None = None


class TrainState(NamedTuple):
  """Everything a resumed run needs (flax's `TrainState`, with the history).

  Attributes:
    params: the parameters.
    opt_state: the optimiser's state.
    epoch: the epochs finished.
    history: one dict per finished epoch (loss and errors).
    extra: the `ExtraLoss`'s state (None without one).
  """
  params: Any
  opt_state: Any
  epoch: int
  history: list
  extra: Any = None


def _epoch_fn(model, opt, cfg: TrainConfig, n: int, extra: ExtraLoss | None):
  """One epoch of minibatch steps: a Python loop over one jitted step.

  Not a `lax.scan`: XLA:CPU runs convolutions inside a while loop ~25× slower
  than at top level (measured: conv net, 3.7 s vs 0.15 s per step of 64).
  """
  steps = n // cfg.batch_size
  has_dropout = any(L.kind == "dropout" for L in model.layers)

  @jax.jit
  def step(params, opt_state, x, y, key, xstate):
    rng = key if has_dropout else None
    k1 = jax.random.fold_in(key, 1)
    def loss(p):
      if extra is not None and extra.step is not None:
        return extra.step(p, xstate, x, y, k1, rng)
      out = loss_fn(model, p, x, y, rng)
      return (out if extra is None else out + extra.loss(p, xstate, k1, rng)), None
    (value, new), g = jax.value_and_grad(loss, has_aux=True)(params)
    upd, opt_state = opt.update(g, opt_state, params)
    return optax.apply_updates(params, upd), opt_state, value, new

  def epoch(params, opt_state, x, y, key, xstate=None):
    order = np.asarray(jax.random.permutation(key, n))[: steps * cfg.batch_size]
    x, y, losses = np.asarray(x), np.asarray(y), []
    for i, idx in enumerate(order.reshape(steps, cfg.batch_size)):
      params, opt_state, loss, new = step(params, opt_state, x[idx], y[idx],
                                          jax.random.fold_in(key, i), xstate)
      xstate = xstate if new is None else new  # None: the state is per epoch
      losses.append(loss)
    return params, opt_state, jnp.mean(jnp.stack(losses)), xstate
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
          extra: ExtraLoss | None = None, progress: bool = True) -> TrainResult:
  """Trains `model` on `ds` (§4.2), resuming from `ckpt_dir` when it holds state.

  Args:
    model: the network.
    ds: training data.
    cfg: optimiser, epochs, batch size, seed, frozen layers.
    params: initial parameters (default: `model.init(PRNGKey(seed))`).
    ckpt_dir: folder for the per-epoch resumable state (and nothing else).
    eval_sets: named datasets whose error is logged after every epoch.
    extra: an extra loss term with state (adversarial pools), refreshed
      before every epoch and checkpointed with the parameters.
    progress: show a tqdm bar over epochs.

  Returns:
    TrainResult(params, history): one dict per epoch (loss and errors).
  """
  _check_data(model, ds)
  if extra is not None and cfg.optimizer == "lbfgs":
    raise ValueError("an extra loss needs a minibatch optimizer ('adam' or 'sgd').")
  key = jax.random.PRNGKey(cfg.seed)
  params = model.init(key) if params is None else params
  unknown = set(cfg.frozen) - set(params)
  if unknown:
    raise ValueError(f"frozen layers {sorted(unknown)} have no parameters; "
                     f"layers with parameters: {sorted(params)}.")
  opt = make_optimizer(cfg, params, len(ds.x))
  s = TrainState(params, opt.init(params), 0, [],
                 extra.init(params) if extra is not None else None)
  s = _restore(ckpt_dir, s) if ckpt_dir else s
  # On the device once: a restored pool is numpy, and a jitted step would copy
  # it from the host at every step.
  s = s._replace(extra=jax.tree_util.tree_map(jnp.asarray, s.extra))
  n = len(ds.x) if cfg.optimizer != "lbfgs" else -1
  run = _lbfgs_fn(model, opt) if n == -1 else _epoch_fn(model, opt, cfg, n, extra)
  bar = tqdm(range(s.epoch, cfg.epochs), disable=not progress, desc=model.name,
             initial=s.epoch, total=cfg.epochs)
  for epoch in bar:
    args = ()
    if extra is not None:
      s = s._replace(extra=extra.refresh(epoch, s.params, s.extra))
      args = (s.extra,)
    params, opt_state, loss, *out = run(s.params, s.opt_state, ds.x, ds.y,
                                        jax.random.fold_in(key, epoch), *args)
    row = {"epoch": epoch + 1, "loss": float(loss)}
    for name, e in (eval_sets or {}).items():
      row[f"{name}_err"] = models.error_rate(model, params, e.x, e.y)
    s = TrainState(params, opt_state, epoch + 1, s.history + [row],
                   out[0] if out else s.extra)  # the minibatch loop's; L-BFGS has none
    bar.set_postfix({k: round(v, 4) for k, v in row.items() if k != "epoch"})
    if ckpt_dir:
      _save_state(ckpt_dir, s)
  return TrainResult(s.params, s.history)


def _save_state(folder: str, s: TrainState) -> None:
  """Writes the resumable state atomically."""
  os.makedirs(folder, exist_ok=True)
  tree = {"params": s.params, "opt_state": s.opt_state, "epoch": s.epoch}
  if s.extra is not None:  # absent without an extra loss: older states still load
    tree["extra"] = s.extra
  blob = serialization.to_bytes(tree)
  checkpoint.atomic_write(os.path.join(folder, STATE), blob)
  checkpoint.atomic_json(os.path.join(folder, "history.json"), s.history)


def _restore(folder: str, s: TrainState) -> TrainState:
  """The saved state of `folder` if any, else `s` unchanged."""
  path = os.path.join(folder, STATE)
  if not os.path.exists(path):
    return s
  template = {"params": s.params, "opt_state": s.opt_state, "epoch": 0}
  if s.extra is not None:
    template["extra"] = s.extra
  with open(path, "rb") as f:
    try:
      got = serialization.from_bytes(template, f.read())
    except Exception as e:  # corrupt or from another model
      raise checkpoint.CheckpointError(
          f"{path} cannot be restored ({e}); it belongs to another model or "
          "config, or is corrupt. Delete it to start over.") from e
  with open(os.path.join(folder, "history.json")) as f:
    history = json.load(f)
  return TrainState(got["params"], got["opt_state"], int(got["epoch"]), history,
                    got.get("extra", s.extra))
