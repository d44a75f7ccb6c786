"""Tests of advjax.units (Szegedy et al. §3) against brute-force numpy."""

import os
import subprocess
import sys
import json

import jax
import numpy as np
import pytest

from advjax import models
from advjax import units

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fc():
  """A random-init FC net and 53 random images (53: not a batch multiple)."""
  model = models.get_model("FC100-100-10")
  params = model.init(jax.random.PRNGKey(0))
  x = np.random.default_rng(0).random((53, 28, 28, 1)).astype(np.float32)
  return model, params, x


def _brute(f, V, k):
  """Reference: stable argsort of −⟨φ(x), v⟩ over the whole set."""
  s = np.asarray(f, np.float64) @ np.asarray(V, np.float64).T  # (N, D)
  idx = np.argsort(-s, axis=0, kind="stable")[:k].T
  return idx, np.take_along_axis(s.T, idx, 1)


@pytest.mark.slow
def test_features_batched_equals_one_pass(fc):
  model, params, x = fc
  f = units.features(model, params, x, "sigmoid2", batch_size=8)
  ref = np.asarray(model.features(params, x, "sigmoid2"))
  assert f.shape == (53, 100)
  np.testing.assert_allclose(f, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [7, 53, 500])
def test_top_k_matches_numpy_argsort(fc, batch_size):
  model, params, x = fc
  V = units.random_directions(jax.random.PRNGKey(1), 12, 100)
  t = units.top_k(model, params, x, "sigmoid2", V, k=5, batch_size=batch_size)
  f = units.features(model, params, x, "sigmoid2")
  idx, s = _brute(f, V, 5)
  np.testing.assert_array_equal(t.index, idx)
  np.testing.assert_allclose(t.scores, s, rtol=1e-4, atol=1e-5)


def test_natural_basis_reproduces_unit_ranking(fc):
  model, params, x = fc
  t = units.top_k(model, params, x, "sigmoid1", units.natural_basis(100),
                  k=10, batch_size=16)
  f = units.features(model, params, x, "sigmoid1")
  for i in (0, 17, 99):
    np.testing.assert_array_equal(
        t.index[i], np.argsort(-f[:, i], kind="stable")[:10])
    np.testing.assert_allclose(t.scores[i], np.sort(f[:, i])[::-1][:10],
                               rtol=1e-6)


@pytest.mark.slow
def test_conv_layer_flattened_and_ties_go_to_lower_index():
  model = models.get_model("conv")
  params = model.init(jax.random.PRNGKey(2))
  x = np.random.default_rng(1).random((20, 28, 28, 1)).astype(np.float32)
  x[5] = x[12] = x[3]  # exact duplicates: equal scores for every direction
  d = units.layer_dim(model, "pool2")
  assert d == units.features(model, params, x[:2], "pool2").shape[1]
  V = units.random_directions(jax.random.PRNGKey(3), 6, d)
  t = units.top_k(model, params, x, "pool2", V, k=20, batch_size=6)
  f = units.features(model, params, x, "pool2")
  idx, _ = _brute(f, V, 20)
  np.testing.assert_array_equal(t.index, idx)
  for row in t.index:  # the three duplicates stay in index order
    pos = [list(row).index(j) for j in (3, 5, 12)]
    assert pos == sorted(pos)


def test_random_directions_reproducible_and_unit_norm():
  a = units.random_directions(jax.random.PRNGKey(7), 30, 64)
  b = units.random_directions(jax.random.PRNGKey(7), 30, 64)
  c = units.random_directions(jax.random.PRNGKey(8), 30, 64)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
  # Isotropic: cosines between independent directions are small on average.
  assert abs(np.mean(a @ c.T)) < 0.05


def test_coherence_is_one_on_one_label_and_chance_on_random_sets():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 10, 5000)
  emb = rng.normal(size=(5000, 32))
  one = np.stack([np.flatnonzero(y == c)[:8] for c in range(10)])
  per_label = rng.normal(size=(10, 32))[y]  # one vector per label
  coh = units.coherence(one, y, per_label)
  np.testing.assert_allclose(coh.purity, 1.0)
  np.testing.assert_allclose(coh.agreement, 1.0)
  np.testing.assert_allclose(coh.cosine, 1.0, rtol=1e-9)  # same vector per label
  sets = units.random_sets(1, 4000, 8, 5000)
  coh = units.coherence(sets, y, units.center(emb))
  p = np.bincount(y) / len(y)
  assert abs(coh.agreement.mean() - np.sum(p ** 2)) < 0.01  # chance Σ p_c²
  # Chance purity of 8 uniform labels (exact by simulation, independent draws).
  sim = rng.integers(0, 10, (20000, 8))
  chance = np.mean([np.bincount(r, minlength=10).max() / 8 for r in sim])
  assert abs(coh.purity.mean() - chance) < 0.02
  assert coh.purity.mean() < 0.5
  assert abs(coh.cosine.mean()) < 0.01


def test_unique_sets_flags_dead_units():
  t = units.TopK(np.array([[3., 2., 1.], [1., 0., 0.], [0., 0., 0.]]),
                 np.zeros((3, 3), np.int32))
  np.testing.assert_array_equal(units.unique_sets(t, 2), [True, False, False])
  np.testing.assert_array_equal(units.unique_sets(t, 1), [True, True, False])


def test_statistics_detect_a_shift_and_not_its_absence():
  rng = np.random.default_rng(0)
  a, b = rng.normal(0, 1, 200), rng.normal(0.5, 1, 200)
  ci = units.bootstrap_ci(a, seed=1, n_boot=2000)
  assert ci.lo < ci.mean < ci.hi and ci.lo < 0.0 < ci.hi + 0.2
  assert abs(ci.hi - ci.lo - 2 * 1.96 / np.sqrt(200)) < 0.08
  assert units.permutation_test(a, b, seed=2, n_perm=2000) < 0.01
  p_same = units.permutation_test(a, rng.normal(0, 1, 200), seed=3, n_perm=2000)
  assert p_same > 0.01


def _percentile_bootstrap(v, rng, n_boot):
  """The hand-written interval advjax had before scipy.stats (reference)."""
  means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
  return np.quantile(means, 0.025), np.quantile(means, 0.975)


def _perm_p(a, b, rng, n_perm):
  """Hand-written two-sided |mean difference| permutation p (reference)."""
  both, obs = np.concatenate([a, b]), abs(a.mean() - b.mean())
  s = both[rng.permuted(np.tile(np.arange(len(both)), (n_perm, 1)), axis=1)]
  d = np.abs(s[:, :len(a)].mean(1) - s[:, len(a):].mean(1))
  return (1 + np.sum(d >= obs - 1e-12)) / (n_perm + 1)


def test_scipy_statistics_agree_with_hand_written_ones():
  rng = np.random.default_rng(5)
  a, b = rng.normal(0, 1, 150), rng.normal(0.25, 1.3, 120)
  ci = units.bootstrap_ci(a, seed=0, n_boot=20000)
  lo, hi = _percentile_bootstrap(a, np.random.default_rng(1), 20000)
  assert abs(ci.lo - lo) < 0.02 and abs(ci.hi - hi) < 0.02
  assert ci.mean == a.mean()
  p = units.permutation_test(a, b, seed=0, n_perm=20000)
  assert abs(p - _perm_p(a, b, np.random.default_rng(2), 20000)) < 0.01
  c = units.bootstrap_ci(np.full(7, 0.5))  # degenerate sample: a point
  assert c == units.Interval(0.5, 0.5, 0.5)


def test_compare_units_against_random_directions():
  """group_values + compare: the §3 comparison on a constructed TopK."""
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(10), 30)  # 300 images, 30 per label
  pure = np.stack([np.flatnonzero(y == c)[:5] for c in range(10)])  # units
  mixed = rng.permutation(300)[:50].reshape(10, 5)  # "random directions"
  index = np.concatenate([pure, mixed])
  # Strictly decreasing scores: every top-4 set is unique.
  t = units.TopK(np.tile(np.arange(5, 0, -1.0), (20, 1)), index)
  null = units.random_sets(0, 50, 4, 300)
  emb = units.center(rng.normal(size=(300, 8)))
  vals, left = units.group_values(t, 10, 4, null, y, {"cos_other": emb})
  assert left == {"units": 0, "random": 0}
  np.testing.assert_allclose(vals["units"]["purity"], 1.0)
  res = units.compare(vals, seed=0, n_boot=500, n_perm=500)
  assert set(res) == {"purity", "agreement", "cos_other"}
  r = res["purity"]
  assert r["units"]["n"] == 10 and r["null"]["n"] == 50
  assert r["units_minus_random"] > 0.4 and r["p_perm"] < 0.01 and r["p_ks"] < 0.01


def test_bad_inputs_raise_clear_errors(fc):
  model, params, x = fc
  with pytest.raises(ValueError, match="no layer"):
    units.top_k(model, params, x, "relu9", np.eye(3), 2)
  with pytest.raises(ValueError, match=r"needs \(D, 100\)"):
    units.top_k(model, params, x, "sigmoid2", np.eye(3), 2)
  with pytest.raises(ValueError, match="k=54"):
    units.top_k(model, params, x, "sigmoid2", np.eye(100), 54)
  with pytest.raises(ValueError, match="takes"):
    units.features(model, params, x[:, :10], "sigmoid2")
  with pytest.raises(ValueError, match="top-\\(k\\+1\\)"):
    units.unique_sets(units.TopK(np.zeros((2, 3)), np.zeros((2, 3))), 3)


@pytest.mark.skipif(not os.environ.get("ADVJAX_DATA_DIR"),
                    reason="ADVJAX_DATA_DIR not set")
@pytest.mark.slow
def test_quick_experiment_writes_results(tmp_path):
  out = tmp_path / "units"
  r = subprocess.run(
      [sys.executable, "-m", "experiments.unit_analysis",
       "--quick", "--workdir", str(out), f"--config.runs_dir={tmp_path / 'none'}"],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads((out / "results.json").read_text())
  assert res["quick"] and res["analyses"] and res["complete"]
  assert json.loads((out / "config.json").read_text())["config"]["quick"]
  for name in ("results.md", "config.json"):
    assert (out / name).exists()
  assert list(out.glob("*.png"))


def test_core_install_errors_name_the_extras():
  """Without matplotlib or tensorflow-datasets (the core install) the figures
  and the TFDS fallback say which extra to install."""
  code = ("import sys; sys.modules['matplotlib'] = None; "
          "sys.modules['tensorflow_datasets'] = None\n"
          "from advjax import data\n"
          "try: data._load_tfds('mnist', 'test')\n"
          "except data.DataError as e: print(e)\n"
          "import experiments.plots")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                     cwd=ROOT, timeout=120)
  assert "pip install 'advjax[tfds]'" in r.stdout
  assert "pip install 'advjax[experiments]'" in r.stderr
