"""Tests of the §4.1 box-constrained L-BFGS attack on a tiny random MLP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax.attack import box_lbfgs as attack_lbfgs
from advjax import attack, reference
from conftest import K, PARAMS, SHAPE, logits_fn, tiny_apply, tiny_data, tiny_params

Opts = attack.AttackOptions

@pytest.fixture(scope="module")
def batch():
  x, pred = tiny_data(4)
  t = np.asarray(attack.random_targets(jax.random.PRNGKey(2), pred, K))
  return x, pred, t, attack.lbfgs(logits_fn, x, t, options=attack.PAPER)


@pytest.fixture(scope="module")
def ref(batch):
  x, _, t, _ = batch
  return reference.lbfgs_reference(logits_fn, x, t)


@pytest.mark.slow
def test_paper_procedure_matches_scipy_reference(batch, ref):
  _, _, _, res = batch
  assert np.all(ref.success) and np.all(np.asarray(res.success))
  d, dr = np.asarray(res.distortion), ref.distortion
  assert d.mean() <= 1.02 * dr.mean(), (d, dr)
  np.testing.assert_allclose(d, dr, rtol=0.05)


@pytest.mark.slow
def test_default_is_never_worse_than_the_reference(batch, ref):
  x, _, t, _ = batch
  fast = attack.lbfgs(logits_fn, x, t)  # short c search + boundary steps
  assert np.all(np.asarray(fast.success))
  d = np.asarray(fast.distortion)
  assert d.mean() <= 1.00 * ref.distortion.mean(), (d, ref.distortion)
  assert np.all(d <= ref.distortion * 1.005), (d, ref.distortion)
  off = attack.lbfgs(logits_fn, x, t, options=attack.AttackOptions(
      polish_steps=0, refine_steps=0))
  assert np.all(d <= np.asarray(off.distortion) + 1e-6)  # the boundary steps only shorten r


@pytest.mark.slow
def test_box_success_and_fields(batch):
  x, _, t, res = batch
  xa = np.asarray(res.x_adv)
  assert xa.shape == x.shape and xa.min() >= 0 and xa.max() <= 1
  np.testing.assert_allclose(np.asarray(res.r), xa - x, atol=1e-6)
  pred = np.asarray(jnp.argmax(logits_fn(res.x_adv), -1))
  np.testing.assert_array_equal(pred[np.asarray(res.success)], t[np.asarray(res.success)])
  r = np.asarray(res.r).reshape(len(x), -1)
  np.testing.assert_allclose(res.l2, np.linalg.norm(r, axis=1), rtol=1e-5)
  np.testing.assert_allclose(res.distortion, np.sqrt((r ** 2).mean(1)), rtol=1e-5)
  assert np.all(np.asarray(res.solves) >= 11)  # bracket + 10 bisections


@pytest.mark.slow
def test_batched_equals_loop(batch):
  x, _, t, res = batch
  for i in range(2):
    one = attack.lbfgs(logits_fn, x[i:i + 1], t[i:i + 1], options=attack.PAPER)
    assert bool(one.success[0]) == bool(res.success[i])
    np.testing.assert_allclose(one.distortion[0], res.distortion[i], rtol=2e-3)


@pytest.mark.slow
def test_flat_inputs_give_same_result(batch):
  x, _, t, res = batch
  flat = attack.lbfgs(logits_fn, x.reshape(4, -1), t, options=attack.PAPER)
  assert flat.x_adv.shape == (4, int(np.prod(SHAPE)))
  np.testing.assert_allclose(flat.distortion, res.distortion, rtol=2e-3)


@pytest.mark.slow
def test_already_target_returns_zero():
  x, pred = tiny_data(4)
  t = pred.copy()
  t[0] = (pred[0] + 1) % K  # one lane really attacked, three already there
  res = attack.lbfgs(logits_fn, x, t)
  assert np.all(np.asarray(res.success))
  np.testing.assert_array_equal(np.asarray(res.r[1:]), 0.)
  np.testing.assert_array_equal(np.asarray(res.solves[1:]), 0)
  assert float(res.l2[0]) > 0 and int(res.solves[0]) > 0


@pytest.mark.slow  # over 1.5 s on 2 cores (session 11)
def test_same_shape_compiles_once():
  x, pred = tiny_data(4, seed=5)
  attack.lbfgs(logits_fn, x, (pred + 1) % K)
  n = attack_lbfgs._attack_jit._cache_size()  # pylint: disable=protected-access
  x2, pred2 = tiny_data(4, seed=6)
  attack.lbfgs(lambda z: logits_fn(z), x2, (pred2 + 2) % K)  # a new closure
  assert attack_lbfgs._attack_jit._cache_size() == n, "a second call of the same shape compiled"


@pytest.mark.slow
def test_untargeted_all_is_min_over_targets():
  x, pred = tiny_data(4, seed=7)
  res = attack.lbfgs(logits_fn, x, options=attack.PAPER)
  assert np.all(np.asarray(res.success))
  per = [attack.lbfgs(logits_fn, x, (pred + k) % K, options=attack.PAPER)
         for k in range(1, K)]
  l2 = np.stack([np.where(p.success, p.l2, np.inf) for p in per])
  np.testing.assert_allclose(res.l2, l2.min(0), rtol=1e-6)
  assert np.all(np.asarray(res.target) != pred)
  screened = attack.lbfgs(logits_fn, x, options=attack.PAPER._replace(screen=2))
  assert np.all(np.asarray(screened.l2) >= np.asarray(res.l2) - 1e-6)  # a subset of targets
  assert np.all(np.asarray(screened.success))
  lg = attack.lbfgs(logits_fn, x, untargeted="logits", options=attack.PAPER)
  assert np.all(np.asarray(lg.target) != pred)
  assert np.all(np.asarray(lg.l2) >= np.asarray(res.l2) - 1e-6)
  rnd = attack.lbfgs(logits_fn, x, untargeted="random", key=jax.random.PRNGKey(0))
  assert np.all(np.asarray(rnd.target) != pred)


def test_random_targets_never_the_label():
  labels = jnp.arange(1000) % 10
  t = np.asarray(attack.random_targets(jax.random.PRNGKey(0), labels, 10))
  assert np.all(t != np.asarray(labels)) and set(t) == set(range(10))


@pytest.mark.slow
def test_jaxopt_solver_option():
  x, pred = tiny_data(2, seed=8)
  pytest.importorskip("jaxopt")
  res = attack.lbfgs(logits_fn, x, (pred + 1) % K,
                      options=Opts(solver="jaxopt", bisect_steps=3, maxiter=30))
  xa = np.asarray(res.x_adv)
  assert xa.min() >= 0 and xa.max() <= 1
  pred_adv = np.asarray(jnp.argmax(logits_fn(res.x_adv), -1))
  np.testing.assert_array_equal(np.asarray(res.success), pred_adv == (pred + 1) % K)


@pytest.mark.parametrize("x, t, fn, msg", [
    (np.full((2,) + SHAPE, 1.5, np.float32), [0, 1], None, r"outside the box bounds=\(0, 1\)"),
    (np.full((2,) + SHAPE, -0.1, np.float32), [0, 1], None, r"outside the box bounds=\(0, 1\)"),
    (np.full((2,) + SHAPE, np.nan, np.float32), [0, 1], None, "NaN or inf"),
    (np.full((2,) + SHAPE, np.inf, np.float32), [0, 1], None, "NaN or inf"),
    (np.zeros((2,) + SHAPE, np.float32), [0, 1, 2], None, "batch size"),
    (np.zeros((2,) + SHAPE, np.float32), [[0], [1]], None, "batch size"),
    (np.zeros((2,) + SHAPE, np.float32), [0, K], None, r"\[0, 5\)"),
    (np.zeros((2,) + SHAPE, np.float32), [-1, 0], None, r"\[0, 5\)"),
    (np.zeros((2,) + SHAPE, np.float32), [0.5, 1.0], None, "integers"),
    (np.zeros((2,) + SHAPE, np.float32), [0, 1], lambda x: logits_fn(x)[0], r"\(B, K\)"),
    (np.zeros((2,) + SHAPE, np.float32), [0, 1], lambda x: logits_fn(x)[:, :, None], r"\(B, K\)"),
    (np.zeros(SHAPE[0], np.float32), [0], None, "batch"),
])
def test_bad_inputs_raise(x, t, fn, msg):
  with pytest.raises(ValueError, match=msg):
    attack.lbfgs(fn or logits_fn, x, np.asarray(t))


def test_bad_options_raise():
  x, pred = tiny_data(2)
  with pytest.raises(ValueError, match="solver"):
    attack.lbfgs(logits_fn, x, pred, options=Opts(solver="adam"))
  with pytest.raises(ValueError, match="c_factor=0.5: must be > 1"):
    attack.lbfgs(logits_fn, x, pred, options=Opts(c_factor=0.5))
  with pytest.raises(ValueError, match="first_order_steps=-1: must be >= 0"):
    attack.lbfgs(logits_fn, x, pred, options=Opts(first_order_steps=-1))
  with pytest.raises(ValueError, match="first_order_steps=2.5: must be an integer"):
    attack.lbfgs(logits_fn, x, pred, options=Opts(first_order_steps=2.5))
  with pytest.raises(ValueError, match="first_order_alpha=0.0: must be > 0"):
    attack.lbfgs(logits_fn, x, pred, options=Opts(first_order_alpha=0.0))
  with pytest.raises(ValueError, match=r"first_order_gamma=1.0: must be in \(0, 1\)"):
    attack.lbfgs(logits_fn, x, pred, options=Opts(first_order_gamma=1.0))
  with pytest.raises(ValueError, match="first_order_unit"):
    attack.lbfgs(logits_fn, x, pred, options=Opts(first_order_unit="pixels"))
  with pytest.raises(ValueError, match="PRNG key"):
    attack.lbfgs(logits_fn, x, untargeted="random")
  with pytest.raises(ValueError, match="untargeted"):
    attack.lbfgs(logits_fn, x, untargeted="worst")
  with pytest.raises(ValueError, match="not an AttackOptions"):
    attack.lbfgs(logits_fn, x, pred, options={})
  with pytest.raises(ValueError, match="not a PRNG key"):
    attack.lbfgs(logits_fn, x, untargeted="random", key=0)
  with pytest.raises(TypeError, match="unknown option 'bisect'"):
    Opts(bisect=3)


@pytest.mark.slow
def test_pair_matches_function_and_new_weights_do_not_recompile(batch):
  x, _, t, res = batch
  got = attack.lbfgs((tiny_apply, PARAMS), x, t, options=attack.PAPER)
  np.testing.assert_allclose(np.asarray(got.distortion), np.asarray(res.distortion),
                             rtol=1e-4, atol=1e-6)
  n0 = attack_lbfgs._attack_jit._cache_size()  # pylint: disable=protected-access
  other = attack.lbfgs((tiny_apply, tiny_params(seed=3)), x, t, options=attack.PAPER)
  assert attack_lbfgs._attack_jit._cache_size() == n0  # new weights, no new compile
  assert np.asarray(other.x_adv).min() >= 0 and np.asarray(other.x_adv).max() <= 1
  with pytest.raises(ValueError, match="target"):
    attack.lbfgs((tiny_apply, PARAMS), x, t[:2])


@pytest.mark.slow
def test_bisect_steps_zero_stops_after_bracketing(batch):
  x, _, t, res = batch
  r0 = attack.lbfgs(logits_fn, x, t, options=attack.PAPER._replace(bisect_steps=0))
  assert np.all(np.asarray(r0.success))  # bracketing alone finds a success
  assert np.all(np.asarray(r0.distortion) >= np.asarray(res.distortion) - 1e-6)
  ref = reference.lbfgs_reference(logits_fn, x[:1], t[:1], bisect_steps=0)
  assert bool(ref.success[0])
