"""Training: loss decreases, seeds are deterministic, checkpoints round-trip, resume."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from advjax import autoencoder, certtrain, checkpoint, data, models, train


@pytest.fixture(scope="module")
def toy():
  """256 images whose label is a linear function of the pixels (learnable)."""
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (256, 28, 28, 1)).astype(np.float32)
  w = rng.normal(size=(784, 10))
  y = np.argmax(x.reshape(256, -1) @ w, -1).astype(np.int32)
  return data.Dataset(x, y)


CFG = train.TrainConfig(epochs=3, batch_size=32, lr=3e-3)


def _same(a, b):
  return all(np.array_equal(u, v) for u, v in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.slow
def test_loss_decreases_and_error_drops(toy):
  m = models.get_model("FC10(1e-4)")
  r = train.train(m, toy, train.TrainConfig(epochs=6, batch_size=32, lr=1e-2),
                  eval_sets={"train": toy}, progress=False)
  losses = [h["loss"] for h in r.history]
  assert losses[-1] < 0.7 * losses[0]
  assert r.history[-1]["train_err"] < r.history[0]["train_err"]


@pytest.mark.slow
def test_lbfgs_full_batch_converges(toy):
  m = models.get_model("FC10(1e-2)")
  r = train.train(m, toy, train.TrainConfig(optimizer="lbfgs", epochs=30), progress=False)
  assert r.history[-1]["loss"] < 0.5 * r.history[0]["loss"]
  g = jax.grad(lambda p: train.loss_fn(m, p, toy.x, toy.y))(r.params)
  gnorm = np.sqrt(sum(float((v ** 2).sum()) for v in jax.tree_util.tree_leaves(g)))
  assert gnorm < 0.05


@pytest.mark.slow
def test_same_seed_same_params(toy):
  m = models.get_model("FC100-100-10")
  a = train.train(m, toy, CFG, progress=False).params
  b = train.train(m, toy, CFG, progress=False).params
  c = train.train(m, toy, train.TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=1),
                  progress=False).params
  assert _same(a, b) and not _same(a, c)


@pytest.mark.slow
def test_resume_equals_uninterrupted(toy, tmp_path):
  m = models.get_model("FC100-100-10")
  full = train.train(m, toy, CFG, progress=False)
  ck = str(tmp_path / "run")
  part = train.train(m, toy, train.TrainConfig(epochs=1, batch_size=32, lr=3e-3),
                     ckpt_dir=ck, progress=False)  # "interrupted" after epoch 1
  assert len(part.history) == 1
  resumed = train.train(m, toy, CFG, ckpt_dir=ck, progress=False)
  assert len(resumed.history) == 3
  assert _same(full.params, resumed.params)


@pytest.mark.slow
def test_checkpoint_round_trip_and_wrong_model(toy, tmp_path):
  m = models.get_model("FC100-100-10")
  p = m.init(jax.random.PRNGKey(0))
  checkpoint.save(str(tmp_path), m, p, {"seed": 0, "errors": {"test": 0.1}})
  m2, p2, meta = checkpoint.load(str(tmp_path))
  assert m2 == m and _same(p, p2) and meta["errors"]["test"] == 0.1
  assert meta["num_params"] == 89610 and "code_version" in meta
  with pytest.raises(checkpoint.CheckpointError, match="wrong checkpoint"):
    checkpoint.load(str(tmp_path), models.get_model("FC123-456-10"))
  (tmp_path / checkpoint.PARAMS).write_bytes(b"\x00\x01corrupt")
  with pytest.raises(checkpoint.CheckpointError):
    checkpoint.load(str(tmp_path))
  with pytest.raises(checkpoint.CheckpointError, match="not an advjax checkpoint"):
    checkpoint.load(str(tmp_path / "missing"))


@pytest.mark.slow
def test_frozen_layer_stays_fixed(toy):
  m = models.get_model("AE400-10")
  p0 = m.init(jax.random.PRNGKey(0))
  cfg = train.TrainConfig(epochs=1, batch_size=64, frozen=("code",))
  p1 = train.train(m, toy, cfg, params=p0, progress=False).params
  assert _same(p0["code"], p1["code"]) and not _same(p0["logits"], p1["logits"])


@pytest.mark.slow  # over 1.5 s on 2 cores (session 11)
def test_autoencoder_pretraining_lowers_loss(toy):
  r = autoencoder.pretrain(toy, train.TrainConfig(epochs=5, batch_size=32),
                                 hidden=16, progress=False)
  assert r.encoder["kernel"].shape == (784, 16) and r.decoder["kernel"].shape == (16, 784)
  assert r.losses[-1] < r.losses[0]


def test_bad_training_data(toy):
  m = models.get_model("FC10(1e-4)")
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    train.train(m, data.Dataset(toy.x * 255, toy.y), CFG, progress=False)
  with pytest.raises(ValueError, match="labels must be"):
    train.train(m, data.Dataset(toy.x, toy.y + 10), CFG, progress=False)
  with pytest.raises(ValueError, match="expects"):
    train.train(m, data.Dataset(toy.x[:, :20], toy.y), CFG, progress=False)
  with pytest.raises(ValueError, match="optimizer"):
    train.make_optimizer(train.TrainConfig(optimizer="rmsprop"), {})


def test_decay_after_half_is_gloros_learning_rate():
  """GloRo's 'decay_after_half_to_0.000001': held for half the steps, then
  geometric down to 1e-6 at the last step (a plain SGD step shows the rate)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  cfg = train.TrainConfig(optimizer="sgd", momentum=0.0, lr=1e-3, epochs=10, batch_size=10,
                          schedule="decay_after_half")
  opt = train.make_optimizer(cfg, {"w": jnp.zeros(())}, n=100)  # 100 steps
  state, rates = opt.init({"w": jnp.zeros(())}), []
  for _ in range(100):
    upd, state = opt.update({"w": jnp.ones(())}, state)
    rates.append(-float(upd["w"]))
  np.testing.assert_allclose(rates[:50], 1e-3, rtol=1e-6)
  np.testing.assert_allclose(rates[75], 1e-3 * (1e-3) ** 0.5, rtol=1e-4)
  assert rates[99] == pytest.approx(1e-3 * (1e-3) ** (49 / 50), rel=1e-4)
  with pytest.raises(ValueError, match="decay_after_half"):
    train.make_optimizer(dataclasses.replace(cfg, lr=1e-7), {}, n=100)
  with pytest.raises(ValueError, match="cosine"):
    train.make_optimizer(dataclasses.replace(cfg, schedule="step"), {}, n=100)


def _flip_last_float_bit(path):
  """Flips the lowest bit of the last byte: a float's mantissa, so msgpack
  still parses and the value stays finite; only a checksum can tell."""
  raw = bytearray(path.read_bytes())
  raw[-1] ^= 1
  path.write_bytes(bytes(raw))


def test_checkpoint_checksum_catches_a_flipped_bit(tmp_path):
  m = models.get_model("FC10(1e-4)")
  checkpoint.save(str(tmp_path), m, m.init(jax.random.PRNGKey(0)))
  meta = checkpoint.read_meta(str(tmp_path))
  blob = (tmp_path / checkpoint.PARAMS).read_bytes()
  assert meta["sha256"] == {checkpoint.PARAMS: checkpoint.sha256(blob)}
  _flip_last_float_bit(tmp_path / checkpoint.PARAMS)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"params\.msgpack: sha256 .* re-copy the checkpoint") as e:
    checkpoint.load(str(tmp_path))
  assert "\n" not in str(e.value)


def test_checkpoint_without_checksum_still_loads(tmp_path):
  """Checkpoints written before checksums: nothing to verify, they load."""
  import json
  m = models.get_model("FC10(1e-4)")
  p = m.init(jax.random.PRNGKey(0))
  checkpoint.save(str(tmp_path), m, p)
  path = tmp_path / checkpoint.META
  meta = json.loads(path.read_text())
  del meta["sha256"]
  path.write_text(json.dumps(meta))
  assert _same(checkpoint.load(str(tmp_path))[1], p)
  # a re-save (train_models.py re-saves a loaded meta with new errors) adds it
  checkpoint.save(str(tmp_path), m, p, dict(meta, sha256={"x": "stale"}))
  assert checkpoint.read_meta(str(tmp_path))["sha256"] == {
      checkpoint.PARAMS: checkpoint.sha256((tmp_path / checkpoint.PARAMS).read_bytes())}


def test_atomic_write_and_json(tmp_path):
  import json
  import os
  path = str(tmp_path / "f.json")
  checkpoint.atomic_json(path, {"a": np.float32(0.5), "b": np.arange(3)})
  assert json.loads(open(path).read()) == {"a": 0.5, "b": [0, 1, 2]}
  checkpoint.atomic_write(path, b"new")
  assert open(path, "rb").read() == b"new" and os.listdir(tmp_path) == ["f.json"]
  # mkstemp's 0600 is not kept: the file gets the mode plain open() gives
  umask = os.umask(0o022)
  os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
  with pytest.raises(TypeError, match="must be bytes"):
    checkpoint.atomic_write(path, "text")
  with pytest.raises(TypeError):
    checkpoint.atomic_json(path, {"a": object()})
  assert open(path, "rb").read() == b"new" and os.listdir(tmp_path) == ["f.json"]


def test_a_checkpoint_must_match_its_config(tmp_path):
  cfg = train.TrainConfig(epochs=2, lr=1e-3)
  meta = {"config": json.loads(json.dumps(dataclasses.asdict(cfg))), "n_train": 20}
  checkpoint.check_matches(str(tmp_path), meta, {"config": dataclasses.asdict(cfg),
                                                 "n_train": 20})  # the same: passes
  other = dataclasses.replace(cfg, lr=1e-2)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"another config .*'config\.lr': \(0\.001, 0\.01\), "
                     r"'n_train': \(20, 30\)"):
    checkpoint.check_matches(str(tmp_path), meta, {"config": dataclasses.asdict(other),
                                                   "n_train": 30}, "'FC10'")


def test_a_field_added_later_matches_at_its_default(tmp_path):
  """A checkpoint written before a config field existed (its meta lacks it)
  matches a config holding that field at its default, given the defaults;
  at another value, or without the defaults, it is refused."""
  cfg = train.TrainConfig(epochs=2)
  old = json.loads(json.dumps(dataclasses.asdict(cfg)))
  del old["schedule"]  # written before TrainConfig.schedule (session 14)
  meta, want = {"config": old}, {"config": dataclasses.asdict(cfg)}
  defaults = checkpoint.defaults_of({"config": cfg})
  assert defaults["config"]["schedule"] == "constant"
  checkpoint.check_matches(str(tmp_path), meta, want, "'FC10'", defaults)
  with pytest.raises(checkpoint.CheckpointError, match=r"'config\.schedule': \(None, 'constant'\)"):
    checkpoint.check_matches(str(tmp_path), meta, want, "'FC10'")
  later = {"config": dataclasses.asdict(dataclasses.replace(cfg, schedule="decay_after_half"))}
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"'config\.schedule': \(None, 'decay_after_half'\)"):
    checkpoint.check_matches(str(tmp_path), meta, later, "'FC10'", defaults)
  recipe = certtrain.Recipe("lmt", 1.0)  # a NamedTuple's defaults too
  assert checkpoint.defaults_of(recipe)["conv_bound"] == "operator"
