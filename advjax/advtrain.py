"""Adversarial training with pools of adversarial examples (Szegedy et al. §4.2).

The paper trains a 100-100-10 net on a mix of training data and a pool of
adversarial examples, a random part of which is continuously replaced by new
examples made for the current network; its best results came from examples
made for a hidden layer's output, used to train the layers above.

The pool is a state, optax-style: `PoolState` (arrays, PRNG key, counters) with
pure `init` and `refresh`. `extra_loss` turns one pool, or a tuple of pools
(one per layer, all at once), into a `train.ExtraLoss`, whose state the
training loop checkpoints with the parameters: a resumed run restores the
pools and equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advjax import batching, checkpoint, models, protocol, train
from advjax import data as data_lib
from advjax.attack import PAPER, AttackOptions, random_targets


class PoolConfig(NamedTuple):
  """One pool (hashable).

  Attributes:
    layer: None: input space; else the (sigmoid) layer whose φ(x) is attacked
      and whose examples train only the layers above it.
    size: examples in the pool.
    refresh: fraction of the pool replaced at each refresh (epoch 0 fills it).
    every: refresh every `every` epochs (the refresh rate).
    weight: the mixing ratio: weight of the pool minibatch's mean CE against
      the clean minibatch's (1: equal).
    batch_size: images per attack call.
    seed: seeds the pool's PRNG key (images, targets, slots).
    attack: the §4.1 attack's options (its strength).
  """
  layer: str | None = None
  size: int = 2000
  refresh: float = 0.25
  every: int = 1
  weight: float = 1.0
  batch_size: int = 250
  seed: int = 0
  attack: AttackOptions = PAPER._replace(bisect_steps=6, maxiter=50)


class PoolState(NamedTuple):
  """A pool: examples z (images or a layer's outputs), their true labels y,
  the PRNG key of the next refresh, refreshes done and examples made."""
  z: jax.Array
  y: jax.Array
  key: jax.Array
  count: jax.Array
  made: jax.Array


def _shape(model: models.Model, params, layer: str | None) -> tuple[int, ...]:
  if layer is None:
    return model.input_shape
  x = jnp.zeros((1,) + model.input_shape, jnp.float32)
  return tuple(jax.eval_shape(lambda p: model.features(p, x, layer), params).shape[1:])


def init(model: models.Model, params, cfg: PoolConfig) -> PoolState:
  """An empty pool of `cfg.size` slots (filled by the first `refresh`)."""
  if cfg.size <= 0 or not 0 < cfg.refresh <= 1 or cfg.every < 1:
    raise ValueError(f"pool needs size > 0, 0 < refresh <= 1, every >= 1: {cfg}.")
  z = jnp.zeros((cfg.size,) + _shape(model, params, cfg.layer), jnp.float32)
  return PoolState(z, jnp.zeros(cfg.size, jnp.int32), jax.random.PRNGKey(cfg.seed),
                   jnp.int32(0), jnp.int32(0))


def _box_inputs(model: models.Model, params, x, layer: str | None) -> np.ndarray:
  """The attacked inputs: images, or a sigmoid layer's outputs (also in [0,1])."""
  if layer is None:
    return np.asarray(x)
  h = np.asarray(model.features(params, x, layer))
  if h.min() < 0 or h.max() > 1:
    raise ValueError(f"layer {layer!r} has outputs outside [0,1]; the box-"
                     "constrained attack needs a sigmoid (or [0,1]) layer.")
  return h


_APPLY: dict = {}  # one function object per (model, layer): the attack compiles once


def _apply_fn(model: models.Model, layer: str | None):
  """apply(params, z) -> logits, from the input or from layer `layer`'s output."""
  if (model, layer) not in _APPLY:
    _APPLY[(model, layer)] = ((lambda p, x: model.apply(p, x)) if layer is None
                              else (lambda p, h: model.apply_from(p, h, layer)))
  return _APPLY[(model, layer)]


def make_examples(model: models.Model, params, x, y, key, cfg: PoolConfig):
  """Adversarial examples with random wrong targets for the current params (§4.2).

  Returns (inputs, labels) of the successful ones: images, or hidden-layer
  outputs when `cfg.layer` is set, labelled with the true label y. The last
  attack batch is padded, so every call runs one compiled shape.
  """
  z = _box_inputs(model, params, x, cfg.layer)
  y = np.asarray(y)
  t = np.asarray(random_targets(key, y, model.num_classes))
  out_z, out_y, b = [], [], cfg.batch_size
  for i in range(0, len(z), b):
    zs, ts, m = z[i:i + b], t[i:i + b], len(z[i:i + b])
    zs, ts = batching.pad(zs, b), batching.pad(ts, b)
    res = protocol.attack(_apply_fn(model, cfg.layer), params, zs, ts, cfg.attack)
    ok = np.asarray(res.success)[:m]
    out_z.append(np.asarray(res.x_adv)[:m][ok])
    out_y.append(y[i:i + b][ok])
  return np.concatenate(out_z), np.concatenate(out_y)


def refresh(model: models.Model, params, state: PoolState, cfg: PoolConfig,
            ds: data_lib.Dataset) -> PoolState:
  """The pool after one refresh: a pure function of its arguments (§4.2).

  An empty pool (count 0) is filled with `size` examples made on random
  training images; later refreshes replace `refresh·size` random slots with
  examples made for the current parameters. Failed attacks leave their slots
  as they were (at the fill: successes are repeated to fill every slot).
  """
  k_img, k_t, k_slot, k_next = jax.random.split(state.key, 4)
  first = int(state.count) == 0
  n = cfg.size if first else max(1, round(cfg.refresh * cfg.size))
  idx = np.asarray(jax.random.choice(k_img, len(ds.x), (min(n, len(ds.x)),),
                                     replace=False))
  z, y = make_examples(model, params, ds.x[idx], ds.y[idx], k_t, cfg)
  if first and not len(z):
    raise RuntimeError("no adversarial example succeeded; strengthen cfg.attack.")
  pz, py = np.array(state.z), np.array(state.y)
  if first:
    fill = np.arange(cfg.size) % len(z)
    pz, py = z[fill], y[fill]
  else:
    slots = np.asarray(jax.random.choice(k_slot, cfg.size, (len(z),), replace=False))
    pz[slots], py[slots] = z, y
  return PoolState(jnp.asarray(pz, jnp.float32), jnp.asarray(py, jnp.int32), k_next,
                   state.count + 1, state.made + len(z))


def pool_loss(model: models.Model, cfg: PoolConfig, params, state: PoolState,
              key, rng, batch_size: int) -> jax.Array:
  """weight · mean CE of a random pool minibatch (input pools: the whole net;
  hidden pools: the layers above `cfg.layer` only)."""
  j = jax.random.randint(key, (batch_size,), 0, state.y.shape[0])
  z, y = state.z[j], state.y[j]
  train_mode = rng is not None
  logits = (model.apply(params, z, train=train_mode, rng=rng) if cfg.layer is None
            else model.apply_from(params, z, cfg.layer, train=train_mode, rng=rng))
  return cfg.weight * optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def extra_loss(model: models.Model, cfgs: PoolConfig | Sequence[PoolConfig],
               ds: data_lib.Dataset, batch_size: int) -> train.ExtraLoss:
  """A `train.ExtraLoss` of one pool or a tuple of pools (one per layer).

  Every epoch refreshes each pool whose rate is due (epoch % every == 0) and
  every step adds each pool's `pool_loss` on a minibatch of `batch_size`.
  """
  cfgs = (cfgs,) if isinstance(cfgs, PoolConfig) else tuple(cfgs)
  if not cfgs:
    raise ValueError("extra_loss needs at least one PoolConfig.")

  def init_all(params):
    return tuple(init(model, params, c) for c in cfgs)

  def refresh_all(epoch, params, states):
    return tuple(refresh(model, params, s, c, ds) if epoch % c.every == 0 or
                 int(s.count) == 0 else s for s, c in zip(states, cfgs))

  def loss(params, states, key, rng):
    return sum(pool_loss(model, c, params, s, jax.random.fold_in(key, i), rng,
                         batch_size) for i, (s, c) in enumerate(zip(states, cfgs)))
  return train.ExtraLoss(init_all, refresh_all, loss)


class Variant(NamedTuple):
  """One way to train the §4.2 net: dropout, pools, training length (hashable).

  Attributes:
    name: the variant's name (also its checkpoint folder).
    dropout: dropout rate before each dense layer (0: weight decay only).
    pools: the pools trained with, all at once (e.g. one per layer).
    epochs: training length (None: the shared TrainConfig's).
    note: what it varies, for the search's table.
  """
  name: str
  dropout: float = 0.0
  pools: tuple[PoolConfig, ...] = ()
  epochs: int | None = None
  note: str = ""


def seeded(v: Variant, cfg: train.TrainConfig, s: int, stride: int = 100):
  """(variant, TrainConfig) of seed index s: training and pool seeds + stride·s."""
  pools = tuple(p._replace(seed=p.seed + stride * s) for p in v.pools)
  tc = dataclasses.replace(cfg, seed=cfg.seed + stride * s, epochs=v.epochs or cfg.epochs)
  return v._replace(pools=pools), tc


def fit(model_name: str, v: Variant, ds: data_lib.Dataset, cfg: train.TrainConfig,
        folder: str, progress: bool = True):
  """Trains one variant into `folder` (resumable, pools included), or loads it.

  Returns (model, params, meta); meta has train_seconds and pool counters.
  """
  want = {"config": dataclasses.asdict(cfg), "n_train": len(ds.x),
          "pools": [p._asdict() for p in v.pools], "dropout": v.dropout}
  if os.path.exists(os.path.join(folder, checkpoint.META)):
    model, params, meta = checkpoint.load(folder)
    checkpoint.check_matches(folder, meta, want, repr(v.name),
                             checkpoint.defaults_of({"config": cfg}))
    return model, params, meta
  model = models.get_model(model_name, dropout=v.dropout)
  ex = extra_loss(model, v.pools, ds, cfg.batch_size) if v.pools else None
  t0 = time.time()
  res = train.train(model, ds, cfg, ckpt_dir=folder, extra=ex, progress=progress)
  meta = dict(want, variant=v.name, train_seconds=round(time.time() - t0, 1))
  checkpoint.save(folder, model, res.params, meta, dropout=v.dropout)
  return model, res.params, checkpoint.read_meta(folder)


def evaluate(model: models.Model, params, te: data_lib.Dataset, n: int, seed: int,
             opts: AttackOptions, cache: str, progress: bool = True) -> dict:
  """Test error and the minimum distortion of n correct test images (§4.2)."""
  s = protocol.adversarial_set(model, params, te, n, seed, cache, opts,
                               progress=progress)
  return {"test_err": models.error_rate(model, params, te.x, te.y),
          "success": float(s["success"].mean()),
          "mean_distortion": protocol.mean_distortion(s)}
