"""Every experiment's quick size on tiny data: shapes and sanity of the results."""

import json
import os

import numpy as np
import pytest

from advjax import evaluate
from experiments import (adv_training, figures, table1, table2, table34,
                         train_models)


@pytest.fixture(scope="module")
def quick(mnist_dir, tmp_path_factory):
  """Quick-trained models of Tables 1 and 3 in a temporary folder."""
  root = tmp_path_factory.mktemp("quick")
  models = str(root / "models")
  out = train_models.main(["--quick", "--out", models, "--no-progress",
                           "--results", str(root / "res" / "train"),
                           "--only", *table1.config.MODELS, *table34.config.MODELS])
  return {"root": root, "models": models, "train": out}


def _load(folder):
  with open(os.path.join(folder, "results.json")) as f:
    return json.load(f)


def test_train_models_quick(quick):
  rows = quick["train"]["rows"]
  assert len(rows) == 9
  for r in rows:
    assert all(0.0 <= v <= 1.0 for v in r["errors"].values())
  res = _load(quick["root"] / "res" / "train")
  assert "code_version" in res and "command" in res


def test_table1_and_2_quick(quick):
  root = quick["root"]
  args = ["--quick", "--models-dir", quick["models"], "--runs", str(root / "runs"),
          "--no-progress"]
  t1 = table1.main(args + ["--results", str(root / "res" / "t1")])
  for r in t1["rows"]:
    assert 0.9 <= r["success"] <= 1.0 and 0.0 < r["mean_distortion"] < 0.5
  assert os.path.exists(root / "res" / "t1" / "distortion_hist.png")
  t2 = table2.main(args + ["--results", str(root / "res" / "t2")])
  m = t2["matrix"]
  for name in table1.config.MODELS:  # successful examples fool their own model
    assert m[name][name] == 1.0
  for row in m.values():
    assert all(0.0 <= v <= 1.0 for v in row.values())
  # Clipped Gaussian noise: RMS below σ but of its order.
  for s in (0.1, 0.3):
    d = t2["distortion"][f"Gaussian noise σ={s:g}"]
    assert 0.4 * s < d <= s


def test_table34_quick(quick):
  root = quick["root"]
  out = table34.main(["--quick", "--models-dir", quick["models"], "--runs",
                      str(root / "runs"), "--no-progress",
                      "--results", str(root / "res" / "t34")])
  m = out["table4"]
  for name in table34.config.MODELS:  # (quick models' distortions exceed 0.1, so
    assert m[name][name] == 1.0       # "amplifying" to 0.1 may shrink them)
  assert all(0.0 <= v <= 1.0 for row in m.values() for v in row.values())
  assert len(m) == 3 + 3 + 2 and len(out["table3"]) == 3


def test_figures_quick(quick):
  res = str(quick["root"] / "res" / "fig")
  out = figures.main(["--quick", "--models-dir", quick["models"], "--results", res])
  assert all(0 <= v["noise_error_same_distortion"] <= 1 for v in out.values())
  assert os.path.exists(os.path.join(res, "adversarial_examples.png"))


def test_adv_training_quick(mnist_dir, tmp_path):
  out = adv_training.main(["--quick", "--out", str(tmp_path / "m"), "--no-progress",
                           "--results", str(tmp_path / "res")])
  names = [r["variant"] for r in out["rows"]]
  assert len(names) == 5 and "adversarial pool (sigmoid1)" in names
  for r in out["rows"]:
    assert 0.0 <= r["test_err"] <= 1.0 and r["mean_distortion"] > 0


def test_noise_distortion_matches_sigma():
  import jax
  x = np.full((200, 28, 28, 1), 0.5, np.float32)  # far from the box edges
  xn = evaluate.gaussian_noise(jax.random.PRNGKey(0), x, 0.1)
  np.testing.assert_allclose(evaluate.distortion(xn - x).mean(), 0.1, rtol=0.01)


def test_amplify_rescales_to_rms():
  rng = np.random.default_rng(0)
  x = np.full((5, 10), 0.5, np.float32)
  r = rng.normal(0, 0.01, (5, 10)).astype(np.float32)
  xa = evaluate.amplify(x, r, 0.1)
  np.testing.assert_allclose(evaluate.distortion(xa - x), 0.1, rtol=1e-5)
  np.testing.assert_array_equal(evaluate.amplify(x, np.zeros_like(r), 0.1), x)
