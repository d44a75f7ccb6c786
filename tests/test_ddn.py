"""Tests of advjax's DDN (the attack's first-order warm start) against foolbox's
DDN on the same function, and of the warm start in the §4.1 attack."""

import jax.numpy as jnp
import numpy as np
import pytest

from advjax import attack, inputs
from advjax.attack import ddn
from advjax.attack import targets

from conftest import K, logits_fn, tiny_data


@pytest.mark.slow
@pytest.mark.parametrize("targeted", [True, False])
def test_ddn_matches_foolbox_step_for_step(targeted):
  fb = pytest.importorskip("foolbox")
  x, pred = tiny_data(16, seed=3)
  t = (pred + 1 + np.arange(16) % (K - 1)) % K
  crit = (fb.criteria.TargetedMisclassification(jnp.asarray(t)) if targeted
          else fb.criteria.Misclassification(jnp.asarray(pred)))
  _, want, ok = fb.attacks.DDNAttack(steps=30)(
      fb.JAXModel(logits_fn, bounds=(0, 1)), jnp.asarray(x), crit, epsilons=None)
  got = ddn.ddn(logits_fn, x, t if targeted else None, steps=30,
                label=None if targeted else pred)
  np.testing.assert_array_equal(np.asarray(got.success), np.asarray(ok))
  np.testing.assert_allclose(np.asarray(got.x_adv), np.asarray(want), atol=1e-5)
  assert 0 < np.asarray(got.success).mean(), "no success: the comparison says nothing"


@pytest.mark.slow
def test_ddn_result_in_any_box_and_rechecked():
  x, pred = tiny_data(8, seed=4)
  x = x * 3 - 1  # a box [-1, 2]
  fn = lambda z: logits_fn((z + 1) / 3)
  t = (pred + 2) % K
  t[0] = pred[0]  # already the target: r = 0
  res = ddn.ddn(fn, x, t, bounds=(-1.0, 2.0), steps=40)
  xa = np.asarray(res.x_adv)
  assert xa.min() >= -1 and xa.max() <= 2
  pred_adv = np.asarray(jnp.argmax(fn(xa), -1))
  np.testing.assert_array_equal(np.asarray(res.success), pred_adv == t)
  assert float(res.l2[0]) == 0 and bool(res.success[0])
  np.testing.assert_allclose(res.l2, np.linalg.norm((xa - x).reshape(8, -1), axis=1),
                             rtol=1e-5)
  away = ddn.ddn(fn, x, bounds=(-1.0, 2.0), steps=40)
  ok = np.asarray(away.success)
  assert ok.all() and np.all(np.asarray(away.target) != pred)


@pytest.mark.parametrize("kw,msg", [(dict(steps=0), "steps"), (dict(gamma=1.5), "gamma"),
                                    (dict(alpha=0.0), "alpha")])
def test_ddn_bad_arguments_raise(kw, msg):
  x, pred = tiny_data(2)
  with pytest.raises(ValueError, match=msg):
    ddn.ddn(logits_fn, x, (pred + 1) % K, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("untargeted", [False, True])
def test_warm_start_beats_both_of_its_parts(untargeted):
  x, pred = tiny_data(8, seed=9)
  t = None if untargeted else (pred + 1 + np.arange(8) % (K - 1)) % K
  warm = attack.lbfgs(logits_fn, x, t)  # the default: first-order steps too
  search = attack.lbfgs(logits_fn, x, t, options=attack.AttackOptions(
      first_order_steps=0, refine_steps=0))
  # untargeted, the first-order pass is targeted DDN towards the label nearest by
  # the linearised distance
  p = inputs.problem(logits_fn, x)
  near = None if t is not None else np.asarray(
      targets.screen(p.apply, K, 1, p.params, jnp.asarray(x), jnp.asarray(pred), 0.0, 1.0)[:, 0])
  o = attack.AttackOptions()
  first = ddn.ddn(logits_fn, x, t if t is not None else near, steps=o.first_order_steps,
                  gamma=o.first_order_gamma, alpha=o.first_order_alpha)
  assert np.all(np.asarray(warm.success)) and np.all(np.asarray(search.success))
  xa = np.asarray(warm.x_adv)
  assert xa.min() >= 0 and xa.max() <= 1
  d = np.asarray(warm.l2)
  # the closer of the two, shrunk to the boundary and walked along it, per lane
  assert np.all(d <= np.asarray(search.l2) + 1e-5), (d, search.l2)
  ok = np.asarray(first.success)
  assert ok.any() and np.all(d[ok] <= np.asarray(first.l2)[ok] + 1e-5), (d, first.l2)
  assert attack.PAPER.first_order_steps == 0  # the paper's tables keep the paper's procedure


@pytest.mark.slow
def test_first_order_pass_does_not_depend_on_how_x_is_scaled():
  # the same model on x in [0, 255]: the pass's steps are in units of the box's
  # width, so the attack's point is 255 times the one in [0, 1]
  x, pred = tiny_data(8, seed=9)
  t = (pred + 1 + np.arange(8) % (K - 1)) % K
  unit = attack.lbfgs(logits_fn, x, t)
  byte = attack.lbfgs(lambda z: logits_fn(z / 255.0), 255 * x, t, bounds=(0, 255))
  assert np.asarray(unit.success).all() and np.asarray(byte.success).all()
  np.testing.assert_allclose(np.asarray(byte.l2) / 255, np.asarray(unit.l2), rtol=1e-3)
  # in input units (foolbox's, and advjax's before): not the same point
  raw = attack.lbfgs(lambda z: logits_fn(z / 255.0), 255 * x, t, bounds=(0, 255),
                      options=attack.AttackOptions(first_order_unit="input"))
  assert np.abs(np.asarray(raw.l2) / 255 - np.asarray(unit.l2)).max() > 1e-3
  xa = np.asarray(byte.x_adv)
  assert xa.min() >= 0 and xa.max() <= 255
