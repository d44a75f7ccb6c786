"""Certified-training recipes (issue 29): each loss against a hand computation."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from advjax import certtrain

Z = jnp.asarray([[3.0, 1.0, 0.0], [0.0, 2.0, 1.5]])
Y = jnp.asarray([0, 2])  # the second is misclassified (margin −0.5)


def test_schedules_ramp_as_published():
  bcp = certtrain.BCP
  assert float(bcp.eps_at(0.5, 1.0)) == 0.0 and float(bcp.clean_weight(0.5)) == 1.0
  assert float(bcp.eps_at(11, 1.58)) == pytest.approx(0.79)
  assert float(bcp.clean_weight(11)) == pytest.approx(0.5)
  assert float(bcp.eps_at(30, 1.0)) == 1.0 and float(bcp.clean_weight(30)) == 0.0
  assert float(certtrain.CAP.eps_at(0, 1.58)) == pytest.approx(0.0158)
  geo = certtrain.Schedule("exp", 0, 150, start=0.01, overshoot=1.1)
  assert float(geo.eps_at(75, 1.0)) == pytest.approx(0.01 * 110.0 ** 0.5, rel=1e-5)
  with pytest.raises(ValueError, match="exp"):
    certtrain.Schedule("exp", 0, 10, start=0.0).check()


def test_gloro_ramp_is_its_log_interpolation():
  """GloRo's '[0.01]-log-[50%:1.1]' at ε = 1.58 over 300 epochs, by hand from
  `_log_interp(lo, hi, 150)[i] = log((e^hi − e^lo)/150·i + e^lo)` with lo, hi
  already multiplied by ε (`_parse_section`), held at hi from epoch 150."""
  g = certtrain.gloro_schedule(300)
  lo, hi = 0.01 * 1.58, 1.1 * 1.58
  for i in (0, 1, 30, 75, 149):
    want = math.log((math.exp(hi) - math.exp(lo)) / 150 * i + math.exp(lo))
    assert float(g.eps_at(i, 1.58)) == pytest.approx(want, rel=1e-5), i
  assert float(g.eps_at(75, 1.58)) > 0.69 * hi  # concave: not the geometric 0.095·hi
  assert float(g.eps_at(150, 1.58)) == pytest.approx(hi)
  assert float(g.eps_at(299, 1.58)) == pytest.approx(hi)


def test_recipe_checks_name_the_field():
  with pytest.raises(ValueError, match="recipe kind"):
    certtrain.Recipe("crown-ibp").check()
  with pytest.raises(ValueError, match="conv_bound"):
    certtrain.Recipe(conv_bound="exact").check()
  assert certtrain.Recipe(conv_bound="lmt").check().conv_bound == "lmt"


def test_lmt_clips_the_shift_by_the_margin():
  """Shift √2·c·L·ε·clip(margin/(√2·c·L), 0, 1) on non-true logits only."""
  L, eps = 2.0, 0.5
  out = np.asarray(certtrain.lmt_logits(Z, Y, L, eps))
  s = math.sqrt(2) * L
  c0 = min(max(2.0 / s, 0), 1)  # example 0: margin 2
  np.testing.assert_allclose(out[0], [3.0, 1.0 + s * eps * c0, 0.0 + s * eps * c0], rtol=1e-6)
  np.testing.assert_allclose(out[1], Z[1], rtol=1e-6)  # misclassified: no penalty


def test_lmt_pairwise_scales_each_pair_and_clips_by_the_worst():
  """LMT++: l_i = c·ε·below·‖w_i − w_y‖, one factor per example, the min over i
  of clip((z_y − z_i)/l_i, 0, 1); a misclassified example is left alone."""
  W = jnp.asarray([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
  below, eps, c = 0.5, 3.0, 2.0
  out = np.asarray(certtrain.lmt_pairwise_logits(Z, Y, below, W, eps, c))
  cols = np.asarray(W).T
  z, y = np.asarray(Z[0]), 0
  l = [c * eps * below * np.linalg.norm(cols[i] - cols[y]) for i in range(3)]
  f = min(1.0 if i == y else min(max((z[y] - z[i]) / l[i], 0.0), 1.0) for i in range(3))
  assert 0 < f < 1  # the clipping is exercised
  np.testing.assert_allclose(out[0], [z[i] + f * l[i] for i in range(3)], rtol=1e-6)
  np.testing.assert_allclose(out[1], Z[1], rtol=1e-6)  # misclassified: no penalty


@pytest.mark.slow
def test_gloro_bottom_logit_and_losses():
  W = jnp.asarray([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])  # kernel (n=2, K=3)
  below, eps = 0.5, 0.3
  K = np.asarray(certtrain.pairwise_k(below, W))
  cols = np.asarray(W).T
  for i in range(3):
    for j in range(3):
      assert K[j, i] == pytest.approx(below * np.linalg.norm(cols[j] - cols[i]))
  ext = np.asarray(certtrain.gloro_logits(Z, below, W, eps))
  for b, j in enumerate(np.argmax(np.asarray(Z), 1)):  # predicted 0, then 1
    want = max(float(Z[b, i]) + eps * K[j, i] for i in range(3) if i != j)
    assert ext[b, 3] == pytest.approx(want, rel=1e-6)
  ce = -np.mean([ext[b, y] - np.log(np.sum(np.exp(ext[b]))) for b, y in enumerate([0, 2])])
  assert float(certtrain.gloro_loss(Z, Y, below, W, eps)) == pytest.approx(ce, rel=1e-5)
  t = float(certtrain.gloro_loss(Z, Y, below, W, eps, trades=2.0))
  p = np.exp(Z) / np.exp(Z).sum(1, keepdims=True)
  q = np.exp(ext) / np.exp(ext).sum(1, keepdims=True)
  ce0 = -np.mean(np.log(p[[0, 1], [0, 2]]))
  kl = np.mean(np.sum(p * (np.log(p) - np.log(q[:, :3])), 1))
  assert t == pytest.approx(ce0 + 2.0 * kl, rel=1e-5)
  assert float(certtrain.gloro_loss(Z, Y, below, W, 0.0)) < float(
      certtrain.gloro_loss(Z, Y, below, W, 1.0))  # a larger ε costs more


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lmt", "gloro-trades"])
def test_a_recipe_trained_net_learns_and_its_radii_hold(kind):
  """A tiny net trained by a recipe (ε ramped) learns a separable rule, and
  its certified radii (CROWN, the Lipschitz bound) are below the attack's."""
  import jax  # pylint: disable=import-outside-toplevel
  from advjax import certify, data, models, train  # pylint: disable=import-outside-toplevel
  from advjax.attack import lbfgs  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = rng.random((256, 6, 6, 1)).astype(np.float32)
  w = rng.normal(size=(36, 3))
  y = np.argmax(x.reshape(256, -1) @ w, 1).astype(np.int32)
  L = models.Layer
  m = models.Model("tiny", (L("flatten", "flatten"), L("fc1", "dense", 16),
                            L("relu1", "relu"), L("logits", "dense", 3)), (6, 6, 1), 3)
  recipe = certtrain.Recipe(kind, eps=0.3, schedule=certtrain.gloro_schedule(6))
  res = train.train(m, data.Dataset(x, y), train.TrainConfig(epochs=6, batch_size=32),
                    extra=certtrain.extra_loss(m, recipe), progress=False)
  assert np.mean(models.predict(m, res.params, x) == y) > 0.6  # chance is 1/3
  xs = x[:6]
  adv = lbfgs((m.apply, res.params), xs)
  d = np.where(np.asarray(adv.success), np.asarray(adv.l2), np.inf)
  for method in ("crown", "lipschitz"):
    r = np.asarray(certify.radius((m.apply, res.params), xs, method=method).l2)
    assert np.all(np.isfinite(r)) and np.all(r <= d), (method, r, d)


def test_collapse_is_detected():
  from experiments import certified_training  # pylint: disable=import-outside-toplevel
  assert certified_training.collapsed(np.zeros(50, int), 0.098)  # a constant net
  assert certified_training.collapsed(np.arange(50) % 10, 0.15)  # below 20%
  assert not certified_training.collapsed(np.arange(50) % 10, 0.9)


@pytest.mark.slow
def test_certified_training_quick_writes_cells_and_resumes(fake_mnist, tmp_path):
  """The experiment's quick size on synthetic data: one LMT cell trained,
  measured (certified ≤ attacked at every ε) and read back on a rerun."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from experiments import certified_training  # pylint: disable=import-outside-toplevel
  from experiments.configs import certified_training as conf  # pylint: disable=import-outside-toplevel
  cfg = dataclasses.replace(conf.get_config(True), runs_dir=str(tmp_path / "runs"),
                            data_dir=str(fake_mnist), progress=False,
                            only=("LMT 1.58 ramped",), n_images=8, batch_size=8)
  out = certified_training.run(cfg, str(tmp_path / "res"))
  row, = out["rows"]
  assert row["cell"] == "LMT 1.58 ramped" and 0 <= row["clean_acc"] <= 1
  if not row["collapsed"]:
    for e in cfg.eps:
      assert row[f"certified@{e}"] <= row[f"attacked@{e}"]
  assert certified_training.run(cfg, str(tmp_path / "res"))["rows"] == out["rows"]
