"""The job engine (`advjax.runs`) and the honesty checks (`advjax.inputs`,
`advjax.criteria`): any job resumable, one writer per folder, parts checked
against their slot, DDN at scale, per-example boxes, Equinox's README shape,
logits of any scale, batch-dependent and broken models refused."""

import functools
import os
import re
import shutil
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import attack, cli, criteria, evaluate, inputs, protocol, reference
from advjax.attack import ddn
from advjax.runs import driver
from advjax.runs import jobs, store
from conftest import K, SHAPE, logits_fn, tiny_data

FAST = attack.AttackOptions(bisect_steps=2, refine_steps=3, first_order_steps=20)


@pytest.mark.slow
def test_ddn_job_resumes_and_equals_ddn(tmp_path):
  x, pred = tiny_data(10, seed=3)
  t = (pred + 1) % K
  pb = inputs.problem(logits_fn, x, target=t, check_logits=False)
  job = jobs.ddn(ddn.DDNOptions(steps=30), targeted=True)
  part = driver.execute(job, pb, str(tmp_path), batch_size=4, stop_after=1, progress=False)
  assert len(part["index"]) == 4 and not driver.is_complete(str(tmp_path))
  full = driver.execute(job, pb, str(tmp_path), batch_size=4, progress=False)
  direct = ddn.ddn(logits_fn, x, t, steps=30)
  np.testing.assert_allclose(full["x_adv"], direct.x_adv, atol=1e-6)
  np.testing.assert_array_equal(full["success"], direct.success)
  assert (full["passes"] == 61).all()
  with pytest.raises(driver.ResumeError, match="differs in: method"):
    driver.run(logits_fn, x, t, str(tmp_path), batch_size=4, progress=False)


@pytest.mark.slow
def test_a_busy_folder_is_refused_and_a_stale_lock_taken_over(tmp_path):
  x, pred = tiny_data(4, seed=4)
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    os.makedirs(tmp_path / "busy")
    with store.Lock(str(tmp_path / "busy")):
      with pytest.raises(driver.ResumeError, match="in use by another run"):
        driver.run(logits_fn, x, (pred + 1) % K, str(tmp_path / "busy"), batch_size=4,
                   progress=False, options=FAST)
    (tmp_path / "busy" / store.LOCK).write_text(
        '{"pid": %d, "host": "%s"}' % (sleeper.pid, os.uname().nodename))
    with pytest.raises(driver.ResumeError, match=f"pid {sleeper.pid}"):
      driver.run(logits_fn, x, (pred + 1) % K, str(tmp_path / "busy"), batch_size=4,
                 progress=False, options=FAST)
  finally:
    sleeper.kill()
    sleeper.wait()
  res = driver.run(logits_fn, x, (pred + 1) % K, str(tmp_path / "busy"), batch_size=4,
                   progress=False, options=FAST)  # the owner is gone: stale
  assert len(res["index"]) == 4 and not (tmp_path / "busy" / store.LOCK).exists()


@pytest.mark.slow
def test_collect_refuses_a_part_in_the_wrong_slot_or_of_another_job(tmp_path):
  x, pred = tiny_data(8, seed=5)
  t = (pred + 1) % K
  driver.run(logits_fn, x, t, str(tmp_path / "a"), batch_size=4, progress=False, options=FAST)
  shutil.copy(tmp_path / "a" / "part-00000.npz", tmp_path / "a" / "part-00001.npz")
  with pytest.raises(driver.ResumeError, match="holds batch 0, not batch 1"):
    driver.collect(str(tmp_path / "a"))
  driver.run(logits_fn, x, (t + 1) % K, str(tmp_path / "b"), batch_size=4, progress=False,
             options=FAST)
  driver.run(logits_fn, x, t, str(tmp_path / "c"), batch_size=4, progress=False, options=FAST)
  shutil.copy(tmp_path / "b" / "part-00001.npz", tmp_path / "c" / "part-00001.npz")
  with pytest.raises(driver.ResumeError, match="written by another job"):
    driver.collect(str(tmp_path / "c"))
  part = tmp_path / "b" / "part-00000.npz"
  part.write_bytes(part.read_bytes()[:100])  # truncated
  with pytest.raises(driver.ResumeError, match="part-00000.npz is missing or corrupt"):
    driver.collect(str(tmp_path / "b"))


class MLP(eqx.Module):  # the shape of Equinox's README example: a list field
  layers: list
  extra_bias: jax.Array

  def __init__(self, key):
    k1, k2 = jax.random.split(key)
    self.layers = [eqx.nn.Linear(36, 8, key=k1), jax.nn.sigmoid, eqx.nn.Linear(8, K, key=k2)]
    self.extra_bias = jnp.ones(K) * 0.1

  def __call__(self, x):
    x = x.reshape(-1)
    for layer in self.layers:
      x = layer(x)
    return x + self.extra_bias


@pytest.mark.slow
def test_equinox_readme_shape_is_attacked_like_a_plain_function():
  m = MLP(jax.random.PRNGKey(0))
  x, _ = tiny_data(4, seed=6)
  a = attack.lbfgs(m, x, options=FAST)  # untargeted: the nearest other label
  b = attack.lbfgs(lambda z: jax.vmap(m)(z), x, options=FAST)
  assert np.asarray(a.success).any()
  np.testing.assert_allclose(a.distortion, b.distortion, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_per_example_boxes_match_the_reference_and_hold():
  x, pred = tiny_data(4, seed=7)
  t = (pred + 1) % K
  lo = np.clip(x - 0.25, 0, 1).reshape(4, -1).reshape(x.shape)
  hi = np.clip(x + 0.25, 0, 1)
  lo[1], hi[1] = 0.0, 1.0  # one example keeps the whole box
  res = attack.lbfgs(logits_fn, x, t, bounds=(lo, hi), options=attack.PAPER)
  ref = reference.lbfgs_reference(logits_fn, x, t, bounds=(lo, hi))
  xa = np.asarray(res.x_adv)
  assert np.all(xa >= lo) and np.all(xa <= hi)
  ok = np.asarray(res.success) & ref.success
  assert ok.sum() >= 2
  np.testing.assert_allclose(np.asarray(res.l2)[ok], ref.l2[ok], rtol=0.03)
  with pytest.raises(ValueError, match="broadcast neither"):
    attack.lbfgs(logits_fn, x, t, bounds=(lo[:3], hi[:3]))


def _scaled(s, z):
  """logits_fn times s: the scale is a weight, so every scale shares one compile."""
  return logits_fn(z) * s


@functools.lru_cache(maxsize=None)
def _at_scale(scale: float, targeted: bool, scale_opt: str = "spread"):
  x, pred = tiny_data(6, seed=8)
  t = (pred + 1 + np.arange(6) % (K - 1)) % K if targeted else None
  return attack.lbfgs((_scaled, jnp.float32(scale)), x, t,
                       options=attack.AttackOptions(scale=scale_opt))


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1e-4, 1e4])
def test_logits_of_any_scale_are_attacked_alike(scale):
  for targeted in (True, False):
    base, scaled = _at_scale(1.0, targeted), _at_scale(scale, targeted)
    assert np.asarray(base.success).all()
    np.testing.assert_array_equal(scaled.success, base.success)
    d, d0 = np.asarray(scaled.distortion), np.asarray(base.distortion)
    assert np.all(np.abs(d / d0 - 1) < 0.01), (targeted, d, d0)  # the 1%, per example
  raw = _at_scale(scale, True, "raw")
  assert np.asarray(raw.success).all()  # the old reading still succeeds, if farther


def test_margin_and_temperature_follow_the_logits_unit():
  z = jnp.asarray(np.random.default_rng(0).normal(size=(5, K)) * 7, jnp.float32)
  for c in (1e-4, 3.0, 1e4):
    np.testing.assert_allclose(criteria.margin(c * z), c * criteria.margin(z), rtol=1e-5)
    np.testing.assert_allclose(criteria.temperature(c * z), c * criteria.temperature(z),
                               rtol=1e-5)
  assert np.all(criteria.temperature(jnp.zeros((2, K))) == 1.0)  # no spread: no tempering
  big = z + 1e6  # an offset far above the spread: the margin stays above float noise
  assert np.all(criteria.margin(big) >= 2.0 ** -17 * 1e6)
  np.testing.assert_allclose(criteria.margin(z, "raw"), 1e-3)  # spreads in [1, 1e3]
  with pytest.raises(ValueError, match="scale='unit'"):
    criteria.margin(z, "unit")
  with pytest.raises(ValueError, match="scale='unit'"):
    attack.AttackOptions(scale="unit").check()


@pytest.mark.slow
def test_ddn_never_takes_a_nan_point_and_failed_rows_are_x():
  def nan_model(z):  # NaN logits wherever class K-1 would win: its region is NaN
    out = logits_fn(z)
    return jnp.where((out.argmax(-1) == K - 1)[:, None], jnp.nan, out)
  x, pred = tiny_data(16, seed=9)
  keep = pred != K - 1
  x, pred = x[keep], pred[keep]
  t = np.full(len(x), K - 1, np.int32)
  res = ddn.ddn(nan_model, x, t, steps=50)
  assert not np.asarray(res.success).any()
  np.testing.assert_array_equal(np.asarray(res.x_adv), x)  # failed rows are x
  other = ddn.ddn(nan_model, x, (pred + 1) % (K - 1), steps=50)  # reachable labels
  ok = np.asarray(other.success)
  assert ok.any() and np.isfinite(np.asarray(nan_model(jnp.asarray(other.x_adv)))[ok]).all()


@pytest.mark.slow  # over 1.5 s on 2 cores (session 11)
def test_batch_dependent_models_are_refused():
  W = jax.random.normal(jax.random.PRNGKey(0), (36, K))
  def batchnorm_train(p, z):  # normalised by the batch's own statistics
    h = z.reshape(len(z), -1) @ p
    return (h - h.mean(0)) / (h.std(0) + 1e-5)
  x, _ = tiny_data(4, seed=10)
  with pytest.raises(ValueError, match="evaluation mode"):
    attack.lbfgs((batchnorm_train, W), x, np.zeros(4, np.int32))
  with pytest.raises(ValueError, match="evaluation mode"):
    ddn.ddn((batchnorm_train, W), x, np.zeros(4, np.int32))


def test_bad_shapes_and_models_get_one_line_errors():
  empty = np.zeros((0,) + SHAPE, np.float32)
  with pytest.raises(ValueError, match=r"target has shape \(2,\)"):
    attack.lbfgs(logits_fn, empty, np.array([1, 2]))
  with pytest.raises(ValueError, match=r"target has shape \(1,\)"):
    attack.lbfgs(logits_fn, empty, [2.7])
  x, _ = tiny_data(2)
  with pytest.raises(ValueError, match="K >= 2"):
    attack.lbfgs(lambda z: logits_fn(z)[:, :1], x, np.zeros(2, np.int32))
  with pytest.raises(ValueError, match="complex"):
    attack.lbfgs(logits_fn, x.astype(np.complex64), np.zeros(2, np.int32))
  with pytest.raises(ValueError, match="numbers or numeric arrays"):
    attack.lbfgs(logits_fn, x, np.zeros(2, np.int32), bounds=("a", "b"))
  assert ddn.ddn(logits_fn, empty, np.zeros(0, np.int32)).x_adv.shape == empty.shape
  try:
    attack.lbfgs(logits_fn, x[0], np.zeros(1, np.int32))
  except ValueError as e:
    assert "x[None]" in str(e) and "\n" not in str(e)


def test_each_criterion_is_defined_once():
  root = os.path.join(os.path.dirname(__file__), "..", "advjax")
  pats = {r"def (ce|lead|verdict|reaches|margin|l2|rms|per_pixel|prefer)\(": "criteria.py",
          r"/ math\.sqrt\(": "criteria.py", r"def (digest|_digest)\(": "adapt.py",
          r"def pad\(|def _pad\(": "batching.py", r"def atomic_write\(": "checkpoint.py",
          r"def (problem|check_labels|prepare)\(": "inputs.py"}
  for pat, home in pats.items():
    where = []
    for d, _, files in os.walk(root):
      for f in files:
        if f.endswith(".py") and f != "reference.py" and re.search(
            pat, open(os.path.join(d, f)).read()):  # the oracle owns its definitions
          where.append(os.path.relpath(os.path.join(d, f), root))
    assert where == [home], (pat, where)
  ref = [l for l in open(os.path.join(root, "reference.py")) if "import" in l]
  assert not [l for l in ref if re.search(r"criteria|penalty|boundary|search", l)], ref


def test_distortion_and_the_closer_point_are_criteria():
  r = np.random.default_rng(0).normal(size=(3, 4, 4, 1))
  want = np.sqrt((r ** 2).mean(axis=(1, 2, 3)))
  assert isinstance(criteria.rms(r), np.ndarray) and criteria.rms(r).dtype == np.float64
  np.testing.assert_allclose(criteria.rms(r), want, rtol=1e-14)  # host: float64, exact
  np.testing.assert_array_equal(evaluate.distortion(r), criteria.rms(r))
  np.testing.assert_allclose(criteria.rms(jnp.asarray(r, jnp.float32)), want, rtol=1e-6)
  np.testing.assert_allclose(criteria.l2(r), np.linalg.norm(r.reshape(3, -1), axis=1),
                             rtol=1e-14)
  ok_a, d_a = np.array([True, True, False, False, True]), np.array([1., 1., 1., 1., 1.])
  ok_b, d_b = np.array([True, False, True, False, True]), np.array([.5, .5, 2., .5, 1.])
  np.testing.assert_array_equal(criteria.prefer(ok_a, d_a, ok_b, d_b),
                                [True, False, True, False, False])  # a on ties


@pytest.mark.parametrize("extra, msg", [
    (["--maxiter", "0"], "--maxiter 0: must be >= 1"),
    (["--c-init", "-1"], "--c-init -1.0: must be > 0"),
    (["--stop-after", "-1"], "--stop-after -1: must be >= 0"),
    (["--num-processes", "2"], "--num-processes given without --distributed"),
    (["--method", "ddn", "--ddn-gamma", "2"], "--ddn-gamma 2.0: must be in"),
    (["--method", "ddn", "--targets", "logits"], "DDN runs towards targets or away"),
])
def test_cli_names_the_flag(tmp_path, cli_job, capsys, extra, msg):  # noqa: F811
  assert cli.main(cli_job + ["--output", str(tmp_path / "a.npz")] + extra) == 2
  err = capsys.readouterr().err.strip()
  assert msg in err and len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_cli_ddn_equals_ddn(tmp_path, cli_job):  # noqa: F811
  from advjax import checkpoint, data
  out = str(tmp_path / "d.npz")
  argv = cli_job + ["--output", out, "--method", "ddn", "--ddn-steps", "20"]
  assert cli.main(argv + ["--stop-after", "1"]) == 0 and not os.path.exists(out)
  assert cli.main(argv) == 0
  z = np.load(out)
  model, params, _ = checkpoint.load(cli_job[2])
  ds = data.load("mnist", "test", cli_job[4])
  t = protocol.targets(0, ds.y, 10)  # the CLI's --seed draws the experiments' targets
  direct = ddn.ddn((model.apply, params), ds.x, t, steps=20)
  np.testing.assert_allclose(z["x_adv"], direct.x_adv, atol=1e-6)
  np.testing.assert_array_equal(z["success"], direct.success)


@pytest.mark.slow
def test_cli_certify_resumes_refuses_another_job_and_stays_below_the_attack(
    tmp_path, cli_job):  # noqa: F811
  from advjax import checkpoint, data
  out = str(tmp_path / "c.npz")
  argv = ["certify"] + cli_job[1:5] + ["--batch-size", "4", "--no-progress",
                                       "--output", out, "--method", "crown"]
  assert cli.main(argv + ["--stop-after", "1"]) == 0 and not os.path.exists(out)
  assert cli.main(argv) == 0
  z = np.load(out)
  assert len(z["l2"]) == 6 and np.isfinite(z["l2"]).all() and (z["l2"] >= 0).all()
  assert cli.main(argv[:-1] + ["ibp", "--work-dir", out + ".parts"]) == 2  # another job
  model, params, _ = checkpoint.load(cli_job[2])
  ds = data.load("mnist", "test", cli_job[4])
  adv = attack.lbfgs((model.apply, params), ds.x, label=z["label"])
  ok = np.asarray(adv.success)
  assert ok.all() and np.all(z["l2"][ok] <= np.asarray(adv.l2)[ok]), (z["l2"], adv.l2)


def test_the_bracket_statistics_are_defined_once_and_refuse_a_violation():
  """evaluate's bracket statistics (every certify experiment calls them): the
  median ρ/d skips misclassified and unbroken examples, accuracies count
  correct examples only, and a radius above d stops a run."""
  rho = np.array([0.5, 1.0, 0.2, 0.3])
  d = np.array([1.0, np.inf, 0.4, 0.6])
  correct = np.array([True, True, True, False])
  assert evaluate.median_ratio(rho, d, correct) == 0.5  # (0.5, 0.5): d inf and wrong skipped
  assert evaluate.median_ratio(rho, d, np.zeros(4, bool)) is None
  assert evaluate.certified_accuracy(rho, correct, 0.5) == 0.5
  assert evaluate.attacked_accuracy(d, correct, 0.5) == 0.5
  evaluate.check_bracket(rho, d, "ok")
  with pytest.raises(AssertionError, match=r"net: certified radius above .* \[1\]"):
    evaluate.check_bracket(np.array([0.1, 2.0]), np.array([1.0, 1.0]), "net")
  root = os.path.join(os.path.dirname(__file__), "..")
  again = []
  for top in ("advjax", "experiments"):  # no inline copy left in a library or experiment file
    for d, _, files in os.walk(os.path.join(root, top)):
      again += [f for f in files if f.endswith(".py") and f != "evaluate.py" and re.search(
          r"rho >= e\b|median\(rho\[ok\] / d|rho > d\)", open(os.path.join(d, f)).read())]
  assert again == [], again
