"""Adversarial training pools (§4.2): input-space and hidden-layer examples."""

import jax
import numpy as np

from advjax import advtrain, data, models, train


def _toy(n=200):
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32)
  y = np.argmax(x.reshape(n, -1) @ rng.normal(size=(784, 10)), -1).astype(np.int32)
  return data.Dataset(x, y)


CFG = advtrain.PoolConfig(size=40, refresh=20, batch_size=20,
                          attack={"bisect_steps": 2, "maxiter": 20})


def test_examples_are_adversarial_and_in_box():
  m = models.get_model("FC100-100-10")
  p = m.init(jax.random.PRNGKey(0))
  ds = _toy(40)
  z, y = advtrain.make_examples(m, p, ds.x, ds.y, jax.random.PRNGKey(1), CFG)
  assert z.shape[1:] == (28, 28, 1) and 0 < len(z) <= 40 and z.min() >= 0 and z.max() <= 1
  pred = np.argmax(np.asarray(m.apply(p, z)), -1)
  assert np.all(pred != y)  # each example fools the model it was made for
  h, yh = advtrain.make_examples(m, p, ds.x, ds.y, jax.random.PRNGKey(1),
                                 CFG._replace(layer="sigmoid1"))
  assert h.shape[1:] == (100,) and 0 <= h.min() and h.max() <= 1
  assert np.all(np.argmax(np.asarray(m.apply_from(p, h, "sigmoid1")), -1) != yh)


def test_pool_training_runs_and_keeps_pool_size():
  m = models.get_model("FC10(1e-4)")  # linear: stays attackable on this toy task
  ds = _toy()
  seen = []
  aug = advtrain.pool_augment(m, CFG)
  def spy(epoch, params, d):
    out = aug(epoch, params, d)
    seen.append(len(out.x))
    return out
  r = train.train(m, ds, train.TrainConfig(epochs=2, batch_size=40), augment=spy,
                  progress=False)
  assert seen == [240, 240] and np.isfinite(r.history[-1]["loss"])


def test_hidden_pool_trains_only_layers_above():
  m = models.get_model("FC100-100-10")
  ds = _toy()
  p0 = m.init(jax.random.PRNGKey(0))
  aug = advtrain.pool_augment(m, CFG._replace(layer="sigmoid2"))
  cfg = train.TrainConfig(epochs=1, batch_size=40, frozen=("fc1", "fc2"))
  p1 = train.train(m, ds, cfg, params=p0, augment=aug, progress=False).params
  np.testing.assert_array_equal(p0["fc1"]["kernel"], p1["fc1"]["kernel"])
  assert not np.allclose(p0["logits"]["kernel"], p1["logits"]["kernel"])
