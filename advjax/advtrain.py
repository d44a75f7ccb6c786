"""Adversarial training with a pool of adversarial examples (Szegedy et al. §4.2).

The paper trains a 100-100-10 net on a mix of training data and a pool of
adversarial examples: a random subset of the pool is continuously replaced by
new examples made for the current network. Its best results came from examples
made for a hidden layer's output, used to train the layers above; both variants
are here (`PoolConfig.layer` None: input space; a layer name: that layer).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from advjax import attacks
from advjax import data as data_lib
from advjax import models
from advjax import train


class PoolConfig(NamedTuple):
  """Pool size, how many examples each epoch replaces, where and how to attack."""
  layer: str | None = None  # None: input space; else attack φ(x) of this layer
  size: int = 2000
  refresh: int = 500
  batch_size: int = 250
  seed: int = 0
  attack: dict[str, Any] | None = None  # options of attacks.lbfgs (None: defaults)
  weight: float = 1.0  # hidden-layer pools: weight of their loss per step


def _box_inputs(model: models.Model, params, x, layer: str | None):
  """The attacked inputs: images, or a sigmoid layer's outputs (also in [0,1])."""
  if layer is None:
    return np.asarray(x)
  h = np.asarray(model.features(params, x, layer))
  if h.min() < 0 or h.max() > 1:
    raise ValueError(f"layer {layer!r} has outputs outside [0,1]; the box-"
                     "constrained attack needs a sigmoid (or [0,1]) layer.")
  return h


def make_examples(model: models.Model, params, x, y, key, cfg: PoolConfig):
  """Adversarial examples with random wrong targets for the current params.

  Returns (inputs, labels) of the successful ones: images, or hidden-layer
  outputs when `cfg.layer` is set, always labelled with the true label y.
  """
  if len(x) % cfg.batch_size:
    raise ValueError(f"{len(x)} examples is not a multiple of batch_size "
                     f"{cfg.batch_size}; pick pool sizes that are.")
  z = _box_inputs(model, params, x, cfg.layer)
  apply = _apply_fn(model, cfg.layer)
  t = np.asarray(attacks.random_targets(key, y, model.num_classes))
  out_z, out_y = [], []
  for i in range(0, len(z), cfg.batch_size):
    sl = slice(i, i + cfg.batch_size)
    res = attacks.lbfgs_params(apply, params, z[sl], t[sl], **(cfg.attack or {}))
    ok = np.asarray(res.success)
    out_z.append(np.asarray(res.x_adv)[ok])
    out_y.append(np.asarray(y)[sl][ok])
  return np.concatenate(out_z), np.concatenate(out_y)


_APPLY: dict = {}  # one function object per (model, layer): the attack compiles once


def _apply_fn(model: models.Model, layer: str | None) -> Callable:
  """apply(params, z) -> logits, from the input or from layer `layer`'s output."""
  if (model, layer) not in _APPLY:
    _APPLY[(model, layer)] = ((lambda p, x: model.apply(p, x)) if layer is None
                              else (lambda p, h: model.apply_from(p, h, layer)))
  return _APPLY[(model, layer)]


def pool_augment(model: models.Model, cfg: PoolConfig) -> Callable:
  """An `augment` for `train.train` that keeps and refreshes the pool (§4.2).

  Epoch 0 fills the pool (`size` examples); every epoch after replaces
  `refresh` random slots with new examples made for the current parameters.
  """
  state = {"z": None, "y": None}
  rng = np.random.default_rng(cfg.seed)

  def augment(epoch: int, params, ds: data_lib.Dataset):
    n = cfg.size if state["z"] is None else cfg.refresh
    idx = rng.choice(len(ds.x), n, replace=False)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), epoch)
    z, y = make_examples(model, params, ds.x[idx], ds.y[idx], key, cfg)
    if not len(z):
      raise RuntimeError("no adversarial example succeeded; loosen cfg.attack.")
    if state["z"] is None:  # repeat failures' slots away: a fixed size compiles once
      fill = np.arange(cfg.size) % len(z)
      state["z"], state["y"] = z[fill], y[fill]
    else:
      slots = rng.choice(cfg.size, len(z), replace=False)
      state["z"][slots], state["y"][slots] = z, y
    if cfg.layer is None:
      return data_lib.Dataset(np.concatenate([ds.x, state["z"]]),
                              np.concatenate([ds.y, state["y"]]))
    return ds, train.HiddenPool(cfg.layer, state["z"], state["y"], cfg.weight)
  return augment
