"""Adversarial training pools (§4.2): input-space and hidden-layer examples, the
pool as a checkpointed state."""

import jax
import numpy as np
import pytest

from advjax import advtrain, attack, data, models, train

ATTACK = attack.PAPER._replace(bisect_steps=2, maxiter=20)
CFG = advtrain.PoolConfig(size=40, refresh=0.5, batch_size=20, attack=ATTACK)


def _toy(n=200):
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32)
  y = np.argmax(x.reshape(n, -1) @ rng.normal(size=(784, 10)), -1).astype(np.int32)
  return data.Dataset(x, y)


def _same(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(np.array_equal(u, v) for u, v in zip(la, lb))


@pytest.mark.slow
def test_examples_are_adversarial_and_in_box():
  m = models.get_model("FC100-100-10")
  p = m.init(jax.random.PRNGKey(0))
  ds = _toy(30)  # not a multiple of the attack batch: the last one is padded
  z, y = advtrain.make_examples(m, p, ds.x, ds.y, jax.random.PRNGKey(1), CFG)
  assert z.shape[1:] == (28, 28, 1) and 0 < len(z) <= 30 and z.min() >= 0 and z.max() <= 1
  pred = np.argmax(np.asarray(m.apply(p, z)), -1)
  assert np.all(pred != y)  # each example fools the model it was made for
  h, yh = advtrain.make_examples(m, p, ds.x, ds.y, jax.random.PRNGKey(1),
                                 CFG._replace(layer="sigmoid1"))
  assert h.shape[1:] == (100,) and 0 <= h.min() and h.max() <= 1
  assert np.all(np.argmax(np.asarray(m.apply_from(p, h, "sigmoid1")), -1) != yh)


@pytest.mark.slow
def test_refresh_is_pure_and_replaces_a_fraction():
  m = models.get_model("FC10(1e-4)")
  p = m.init(jax.random.PRNGKey(0))
  ds = _toy()
  s0 = advtrain.init(m, p, CFG)
  assert s0.z.shape == (40, 28, 28, 1) and int(s0.count) == 0
  s1 = advtrain.refresh(m, p, s0, CFG, ds)
  assert _same(s1, advtrain.refresh(m, p, s0, CFG, ds))  # same inputs, same pool
  s2 = advtrain.refresh(m, p, s1, CFG, ds)
  changed = np.any(np.asarray(s1.z != s2.z).reshape(40, -1), 1).sum()
  assert int(s2.count) == 2 and 0 < changed <= 20


@pytest.mark.slow
def test_pool_training_runs():
  m = models.get_model("FC10(1e-4)")  # linear: stays attackable on this toy task
  ds = _toy()
  ex = advtrain.extra_loss(m, CFG, ds, batch_size=40)
  r = train.train(m, ds, train.TrainConfig(epochs=2, batch_size=40), extra=ex,
                  progress=False)
  assert np.isfinite(r.history[-1]["loss"])


@pytest.mark.slow
def test_hidden_pool_trains_only_layers_above():
  m = models.get_model("FC100-100-10")
  ds = _toy()
  p0 = m.init(jax.random.PRNGKey(0))
  ex = advtrain.extra_loss(m, CFG._replace(layer="sigmoid2"), ds, batch_size=40)
  cfg = train.TrainConfig(epochs=1, batch_size=40, frozen=("fc1", "fc2"))
  p1 = train.train(m, ds, cfg, params=p0, extra=ex, progress=False).params
  np.testing.assert_array_equal(p0["fc1"]["kernel"], p1["fc1"]["kernel"])
  assert not np.allclose(p0["logits"]["kernel"], p1["logits"]["kernel"])
  # The hidden pool's gradient reaches the layers above only.
  st = ex.init(p0)
  st = ex.refresh(0, p0, st)
  g = jax.grad(lambda p: ex.loss(p, st, jax.random.PRNGKey(0), None))(p0)
  assert not np.any(np.asarray(g["fc1"]["kernel"]))
  assert not np.any(np.asarray(g["fc2"]["kernel"]))  # fc2 is below sigmoid2 too
  assert np.any(np.asarray(g["logits"]["kernel"]))


@pytest.mark.slow
def test_resumed_pool_training_equals_uninterrupted(tmp_path):
  """The pools (one per layer, all at once) are saved with the parameters."""
  m = models.get_model("FC100-100-10")
  ds = _toy(120)
  # A briefly trained start: a random-init net's hidden layers barely move the
  # logits inside the box, so hidden-layer attacks there rarely succeed.
  p0 = train.train(m, ds, train.TrainConfig(epochs=2, batch_size=40, lr=1e-2),
                   progress=False).params
  pools = (CFG._replace(size=20), CFG._replace(layer="sigmoid2", size=20, seed=1))
  ex = advtrain.extra_loss(m, pools, ds, batch_size=40)
  cfg = train.TrainConfig(epochs=3, batch_size=40, lr=3e-3)
  full = train.train(m, ds, cfg, params=p0, extra=ex, progress=False)
  ck = str(tmp_path / "run")
  train.train(m, ds, train.TrainConfig(epochs=1, batch_size=40, lr=3e-3), params=p0,
              ckpt_dir=ck, extra=ex, progress=False)  # "interrupted" after epoch 1
  resumed = train.train(m, ds, cfg, params=p0, ckpt_dir=ck, extra=ex, progress=False)
  assert len(resumed.history) == 3
  assert _same(full.params, resumed.params)
