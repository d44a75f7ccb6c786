"""One attack for any JAX model and any box (§4.1): model kinds, compiles, bounds, honesty."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from advjax.attack import box_lbfgs as attack_lbfgs
from advjax import attack, checkpoint, models, reference
from conftest import K, PARAMS, SHAPE, logits_fn, tiny_apply, tiny_data, tiny_params

Opts = attack.AttackOptions
FAST = Opts(bisect_steps=4)


@pytest.fixture(scope="module")
def case():
  x, pred = tiny_data(3, seed=11)
  t = (pred + 1) % K
  return x, t, attack.lbfgs(logits_fn, x, t, options=FAST)


class _Linen(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.sigmoid(nn.Dense(16)(x.reshape(x.shape[0], -1)) - 1.5)
    return nn.Dense(K)(h)


class _NNX(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(36, 16, rngs=rngs)
    self.l2 = nnx.Linear(16, K, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.sigmoid(self.l1(x.reshape(x.shape[0], -1)) - 1.5))


class _Eqx(eqx.Module):
  """Unbatched, as equinox modules are: one example in, (K,) logits out."""
  W1: jax.Array
  W2: jax.Array
  b: jax.Array

  def __call__(self, x):
    return jax.nn.sigmoid(x.reshape(-1) @ self.W1 - 1.5) @ self.W2 + self.b


def _nnx_model(params):
  m = _NNX(nnx.Rngs(0))
  W1, W2, b = params
  m.l1.kernel[...], m.l1.bias[...] = W1, jnp.zeros(16)
  m.l2.kernel[...], m.l2.bias[...] = W2, b
  return m


def _kinds(params):
  W1, W2, b = params
  linen_vars = {"params": {"Dense_0": {"kernel": W1, "bias": jnp.zeros(16)},
                           "Dense_1": {"kernel": W2, "bias": b}}}
  return {"pair": (tiny_apply, params), "linen": (_Linen().apply, linen_vars),
          "nnx": _nnx_model(params), "equinox": _Eqx(W1, W2, b),
          "jitted function": jax.jit(lambda z: tiny_apply(params, z))}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pair", "linen", "nnx", "equinox", "jitted function"])
def test_every_model_kind_matches_the_plain_function(case, kind):
  x, t, res = case
  got = attack.lbfgs(_kinds(PARAMS)[kind], x, t, options=FAST)
  np.testing.assert_array_equal(np.asarray(got.success), np.asarray(res.success))
  np.testing.assert_allclose(np.asarray(got.distortion), np.asarray(res.distortion),
                             rtol=2e-3, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pair", "nnx", "equinox", "jitted function"])
def test_new_weights_compile_nothing(case, kind):
  x, t, _ = case
  attack.lbfgs(_kinds(PARAMS)[kind], x, t, options=FAST)
  n0 = attack_lbfgs._attack_jit._cache_size()  # pylint: disable=protected-access
  other = attack.lbfgs(_kinds(tiny_params(seed=5))[kind], x, t, options=FAST)
  assert attack_lbfgs._attack_jit._cache_size() == n0, "new weights recompiled the attack"
  assert np.asarray(other.x_adv).min() >= 0 and np.asarray(other.x_adv).max() <= 1


def test_equal_models_built_twice_share_one_compilation():
  """A bound method counts by its object's value: the apply of two equal
  advjax Models (or of a Flax module built again) is one static jit key, so
  the attack and a certificate compile once (Python compares bound methods by
  identity: the experiments' tables compiled the attack once per model object);
  other models and plain functions keep their own."""
  from advjax import adapt  # pylint: disable=import-outside-toplevel
  key = lambda fn: adapt.wrap((fn, None), SHAPE).apply
  a, b = models.get_model("FC10(1e-4)"), models.get_model("FC10(1e-4)")
  assert a is not b and key(a.apply) == key(b.apply)
  assert hash(key(a.apply)) == hash(key(b.apply))
  assert key(a.apply) != key(models.get_model("FC10(1e-3)").apply)
  assert key(_Linen().apply) == key(_Linen().apply)
  assert key(lambda p, x: x) != key(lambda p, x: x)

  class Named:  # a hand-written __eq__ that leaves out the state apply reads
    def __init__(self, w):
      self.w = w

    def __eq__(self, other):
      return isinstance(other, Named)

    def __hash__(self):
      return 0

    def apply(self, params, x):
      return x * self.w
  assert key(Named(1.0).apply) != key(Named(2.0).apply)  # identity, as before
  x = jnp.zeros((2, 28, 28, 1))
  pa = a.init(jax.random.PRNGKey(0))
  adapt.logits(key(a.apply), pa, x)
  n0 = adapt.logits._cache_size()  # pylint: disable=protected-access
  adapt.logits(key(b.apply), jax.tree_util.tree_map(lambda v: v + 1, pa), x)
  assert adapt.logits._cache_size() == n0, "an equal model compiled again"


def _shifted(lo, hi):
  """The tiny model seen on inputs in [lo, hi] (it is defined on [0, 1])."""
  return lambda z: logits_fn((z - lo) / (hi - lo))


@pytest.mark.slow
def test_box_minus_one_one_matches_reference():
  x01, pred = tiny_data(3, seed=12)
  x, t = 2 * x01 - 1, (pred + 2) % K
  fn = _shifted(-1.0, 1.0)
  res = attack.lbfgs(fn, x, t, bounds=(-1, 1), options=attack.PAPER)
  ref = reference.lbfgs_reference(fn, x, t, bounds=(-1, 1))
  fast = attack.lbfgs(fn, x, t, bounds=(-1, 1))
  for r in (res, fast):
    xa = np.asarray(r.x_adv)
    assert np.all(np.asarray(r.success)) and np.all(ref.success)
    assert xa.min() >= -1 and xa.max() <= 1 and xa.min() < 0  # the box is used
  assert np.asarray(res.distortion).mean() <= 1.02 * ref.distortion.mean()
  np.testing.assert_allclose(res.distortion, ref.distortion, rtol=0.05)
  assert np.asarray(fast.distortion).mean() <= ref.distortion.mean()
  with pytest.raises(ValueError, match=r"outside the box bounds=\(-1, 1\)"):
    attack.lbfgs(fn, x + 1.5, t, bounds=(-1, 1))


@pytest.mark.slow
def test_per_pixel_bounds_match_reference_and_hold():
  x, pred = tiny_data(3, seed=13)
  t = (pred + 1) % K
  lo = np.zeros(SHAPE, np.float32)
  hi = np.ones(SHAPE, np.float32)
  hi[:3] = np.maximum(x.max(0)[:3], 1e-3)  # the top rows may not brighten
  res = attack.lbfgs(logits_fn, x, t, bounds=(lo, hi), options=attack.PAPER)
  ref = reference.lbfgs_reference(logits_fn, x, t, bounds=(lo, hi))
  fast = attack.lbfgs(logits_fn, x, t, bounds=(lo, hi))
  for r in (res, fast):
    xa = np.asarray(r.x_adv)
    assert np.all(xa >= lo) and np.all(xa <= hi)
    assert np.all(np.asarray(r.success) == ref.success)
  ok = ref.success
  assert np.asarray(res.distortion)[ok].mean() <= 1.02 * ref.distortion[ok].mean()
  assert np.asarray(fast.distortion)[ok].mean() <= ref.distortion[ok].mean()
  free = attack.lbfgs(logits_fn, x, t, options=attack.PAPER)
  assert np.all(np.asarray(res.distortion) >= np.asarray(free.distortion) - 1e-4)
  with pytest.raises(ValueError, match="broadcast"):
    attack.lbfgs(logits_fn, x, t, bounds=(0, np.ones(7)))
  with pytest.raises(ValueError, match="lo <= hi"):
    attack.lbfgs(logits_fn, x, t, bounds=(1, 0))


def test_nan_logits_are_an_error_never_a_success():
  x, _ = tiny_data(3)
  nan_fn = lambda z: logits_fn(z) * jnp.nan
  with pytest.raises(ValueError, match="non-finite logits .* 3 of 3"):
    attack.lbfgs(nan_fn, x, np.zeros(3, np.int32))
  half = lambda z: jnp.where(z.reshape(len(z), -1)[:, :1] > 0.5, jnp.nan, logits_fn(z))
  with pytest.raises(ValueError, match="non-finite"):
    attack.lbfgs(half, np.full((2,) + SHAPE, 0.9, np.float32), np.zeros(2, np.int32))


def test_nan_checkpoint_and_meta_without_keys_are_refused(tmp_path):
  m = models.get_model("FC10(1e-4)")
  p = m.init(jax.random.PRNGKey(0))
  p["logits"]["kernel"] = p["logits"]["kernel"].at[0, 0].set(jnp.nan)
  checkpoint.save(str(tmp_path), m, p)
  with pytest.raises(checkpoint.CheckpointError, match=r"logits.*kernel.*NaN"):
    checkpoint.load(str(tmp_path))
  (tmp_path / checkpoint.META).write_text('{"errors": {}}')
  with pytest.raises(checkpoint.CheckpointError, match=r"meta.json lacks the keys"):
    checkpoint.load(str(tmp_path))


@pytest.mark.slow
def test_empty_and_unbatched_inputs():
  x, pred = tiny_data(2)
  empty = attack.lbfgs(logits_fn, x[:0], pred[:0])
  assert empty.x_adv.shape == (0,) + SHAPE and empty.success.shape == (0,)
  m = models.get_model("FC10(1e-4)")
  one = np.zeros((28, 28, 1), np.float32)  # one image, no batch axis
  with pytest.raises(ValueError, match=r"x\[None\]"):
    attack.lbfgs((m.apply, m.init(jax.random.PRNGKey(0))), one, np.zeros(28, np.int32))
  with pytest.raises(TypeError, match="not supported"):
    attack.lbfgs(42, x, pred)
