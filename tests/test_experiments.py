"""Every experiment's quick size through `run(cfg, workdir)`, the harness, the claims.

The experiments run on a synthetic IDX folder (conftest's `fake_mnist`), as
the flax examples' tests run on mock data: they need no MNIST and check the
mechanics, not the paper's numbers (tests/test_claims.py checks those).
"""

import dataclasses
import importlib
import json
import os
import pkgutil
import shlex
import subprocess
import sys

import jax
import numpy as np
import pytest

from advjax import checkpoint, data, evaluate, protocol
from advjax.certify import CertifyOptions
from experiments import (adv_search, adv_training, certify, claims, common, configs,
                         figures, reproduce, table1, table2, table34, tables, train_models)
from experiments.configs import certify as c_cert
from experiments.configs import adv_search as c_search
from experiments.configs import adv_training as c_adv
from experiments.configs import figures as c_fig
from experiments.configs import reproduce as c_rep
from experiments.configs import table1 as c_t1
from experiments.configs import table2 as c_t2
from experiments.configs import table34 as c_t34
from experiments.configs import train_models as c_train

EXPERIMENTS = [m.name for m in pkgutil.iter_modules(configs.__path__)]
# Table 1's models but FC200-200-10 (FC100-100-10's code path at twice the cost).
T1_MODELS = tuple(m for m in c_t1.MODELS if m != "FC200-200-10")


def _quick(conf_mod, runs, data_dir, **kw):
  """The quick config on the synthetic data, writing into `runs`."""
  return dataclasses.replace(conf_mod.get_config(True), runs_dir=str(runs),
                             data_dir=str(data_dir), progress=False, **kw)


def _exec(script, conf_mod, cfg, workdir):
  return common.execute(script.run, conf_mod, cfg, str(workdir), markdown=script.markdown)


@pytest.fixture(scope="module")
def quick(fake_mnist, tmp_path_factory):
  """Quick-trained Table 1 (T1_MODELS) and Table 3 models in a temporary runs folder."""
  root = tmp_path_factory.mktemp("quick")
  cfg = _quick(c_train, root / "runs", fake_mnist, only=T1_MODELS + c_t34.MODELS)
  out = _exec(train_models, c_train, cfg, root / "res" / "train_models")
  return {"root": root, "runs": root / "runs", "data": fake_mnist, "train": out,
          "train_cfg": cfg}


def _q(conf_mod, quick, **kw):
  """The quick config over the `quick` fixture's models and data."""
  return _quick(conf_mod, quick["runs"], quick["data"], **kw)


@pytest.fixture(scope="module")
def t34(quick):
  """Tables 3 and 4 run once, in the folder the claims read."""
  return _exec(table34, c_t34, _q(c_t34, quick), quick["root"] / "res" / "table34")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_experiment_is_a_module_named_as_its_config(name):
  """experiments/<name>.py runs configs/<name>.py, whose docstring gives its command."""
  script = importlib.import_module(f"experiments.{name}")
  conf = importlib.import_module(f"experiments.configs.{name}")
  assert script.config is conf and callable(script.run) and callable(script.markdown)
  assert f"python -m experiments.{name}" in conf.__doc__ and conf.TITLE
  assert "sys.path" not in open(script.__file__).read()  # a module, no path hack


@pytest.mark.slow
def test_runs_as_a_module_from_the_repository_root():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  r = subprocess.run([sys.executable, "-m", "experiments.table1", "--help"], cwd=root,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "python -m experiments.table1" in r.stdout and "--config.FIELD" in r.stdout


@pytest.mark.slow
def test_train_models_quick(quick):
  rows = quick["train"]["rows"]
  n_train = len(data.load("mnist", "train", str(quick["data"])).x)
  assert len(rows) == 8 and quick["train"]["n_train_used"] == n_train
  for r in rows:
    assert all(0.0 <= v <= 1.0 for v in r["errors"].values())
  assert os.path.exists(quick["runs"] / "models" / "seed0" / "FC100-100-10" / "meta.json")
  res = common.read_json(quick["root"] / "res" / "train_models" / "results.json")
  assert res["complete"] and "code_version" in res and res["quick"]
  md = (quick["root"] / "res" / "train_models" / "results.md").read_text()
  assert "QUICK run" in md.splitlines()[2]


@pytest.mark.slow
def test_seeds_differ_and_finished_models_are_checked(quick):
  cfg = quick["train_cfg"]
  jobs = {j.folder: j for j in cfg.jobs}
  p1, p2 = jobs["P1-FC100-100-10"], jobs["P2-FC100-100-10"]
  seeds = {(f, s): train_models.seeded(jobs[f], cfg, s).cfg.seed
           for f in (p1.folder, p2.folder) for s in range(3)}
  assert len(set(seeds.values())) == 6 and seeds[(p2.folder, 0)] == 1
  other = dataclasses.replace(cfg, epochs=7, only=("FC10(1)",))
  with pytest.raises(checkpoint.CheckpointError, match="another config"):
    train_models.run(other, str(quick["root"] / "res" / "other"))


@pytest.mark.slow
def test_other_dataset_trains_into_its_own_folder(fake_mnist, tmp_path):
  cfg = _quick(c_train, tmp_path / "runs", fake_mnist, dataset="fashion_mnist",
               n_train=None, n_test=None, only=("FC10(1e-4)",))
  out = train_models.run(cfg, str(tmp_path / "res"))
  assert out["n_train_used"] == len(data.load("mnist", "train", str(fake_mnist)).x)
  meta = checkpoint.read_meta(str(tmp_path / "runs" / "models_fashion_mnist" / "seed0" / "FC10(1e-4)"))
  assert meta["data"]["dataset"] == "fashion_mnist"
  row = [line for line in tables.train_models(out, cfg).splitlines() if "FC10" in line]
  assert row[0].endswith("| – |")  # MNIST's paper numbers are not printed beside it


@pytest.mark.slow
def test_recorded_command_runs_as_written(quick):
  """config.json's command parses back to the very config it ran."""
  conf = common.read_json(quick["root"] / "res" / "train_models" / "config.json")
  words = [w for w in shlex.split(conf["command"]) if not w.startswith("ADVJAX_DATA_DIR=")]
  assert words[:3] == ["python", "-m", "experiments.train_models"]
  cfg, workdir = common.parse_flags(words[3:], c_train)
  assert cfg == quick["train_cfg"]
  assert os.path.normpath(workdir) == os.path.normpath(str(quick["root"] / "res" / "train_models"))


@pytest.mark.slow
def test_tables_1_2_and_claims_mechanics(quick, t34):  # pylint: disable=unused-argument
  root = quick["root"]
  t1 = _exec(table1, c_t1, _q(c_t1, quick, models=T1_MODELS), root / "res" / "table1")
  for s in t1["summary"].values():
    assert 0.9 <= s["success"]["mean"] <= 1.0 and 0 < s["mean_distortion"]["mean"] < 0.5
    assert s["mean_distortion"]["n"] == 1 and s["mean_distortion"]["sd"] == 0
  assert os.path.exists(root / "res" / "table1" / "distortion_hist.png")
  t2 = _exec(table2, c_t2, _q(c_t2, quick, models=T1_MODELS), root / "res" / "table2")
  m = t2["matrix"]
  for name in T1_MODELS:  # successful examples fool their own model
    assert m[name][name]["mean"] == 1.0
  assert all(0.0 <= v["mean"] <= 1.0 for row in m.values() for v in row.values())
  for s in (0.1, 0.3):  # clipped Gaussian noise: RMS below σ but of its order
    assert 0.4 * s < t2["distortion"][f"Gaussian noise σ={s:g}"]["mean"] <= s
  fake_adv = {"summary": {"baseline": {"test_err": common.summarize([0.5, 0.52])},
                          "centre": {"test_err": common.summarize([0.4, 0.41])}}}
  ratio = lambda **q: {"methods": {k: {"median_ratio": v} for k, v in q.items()}}
  fake_cert = {"models": {
      "FC10(1e-4)": dict(ratio(exact=0.999, crown=0.999, lipschitz=0.8),
                         attack_over_exact={"mean": 0.0008, "max": 0.3}),
      "FC100-100-10": ratio(crown=0.44, lipschitz=0.1),
      "ReLU-784-300-100-10": ratio(**{"crown-nobox": 0.42, "crown": 0.55, "alpha-crown": 0.56})},
      "seeds": {"conv": {s: {"median_ratio/crown": 0.013, "median_ratio/lipschitz": 0.01}
                         for s in ("0", "1")}}}
  row = lambda err, l2, rho, prod, c158: {k: common.summarize(v) for k, v in dict(
      test_err=err, mean_l2=l2, mean_radius=rho, bound_product=prod,
      **{"certified@1.58": c158}).items()}
  fake_lt = {"summary": {"weight decay": row([.017, .018], [.99, 1.0], [.41, .42], [112, 113], [0, 0]),
                         "penalty 0.01": row([.016, .0165], [1.2, 1.3], [.6, .62], [16, 17], [0, 0]),
                         "log-product 1e-2": row([.016, .0165], [1.2, 1.3], [.6, .62], [26, 27], [0, 0]),
                         "LMT 0.5": row([.05, .06], [1.5, 1.5], [.75, .76], [3, 3], [.5, .5])}}
  r = dict(claims.load(str(root / "res"), ("table1", "table2", "table34")),
           adv_training=fake_adv, certify=fake_cert, lipschitz_training=fake_lt)
  for name, f in claims.CLAIMS.items():  # the claims read this schema
    held, detail = f(r)
    assert isinstance(held, bool) and detail, name
  assert claims.advtrain_lowers_error(r)[0]
  assert claims.exact_closes_affine_bracket(r)[0] and claims.box_and_slopes_tighten_plain_crown(r)[0]
  assert claims.crown_beats_lipschitz_on_conv(r)[0]
  assert claims.attack_meets_exact_minimum(r)[0] and not claims.attack_within_1pct_of_exact_everywhere(r)[0]
  # fake rows where the penalties win at both ends and LMT's 5.5% error passes the anchor
  assert claims.penalty_improves_error(r)[0] and claims.penalty_raises_both_ends(r)[0]
  assert claims.penalty_shrinks_bound_product(r)[0] and claims.lmt_buys_radius_for_error(r)[0]
  assert claims.a_variant_beats_the_lmt_anchor(r)[0]


@pytest.mark.slow
def test_two_seeds_give_mean_and_sd(quick):
  fc10 = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)")
  tcfg = dataclasses.replace(quick["train_cfg"], seeds=(0, 1), only=fc10)
  tr = train_models.run(tcfg, str(quick["root"] / "res" / "train2"))
  assert [r["seed"] for r in tr["rows"]] == [0, 0, 0, 1, 1, 1]
  assert tr["summary"]["FC10(1)"]["err_test"]["n"] == 2
  cfg = _q(c_t1, quick, seeds=(0, 1), models=fc10)
  t1 = table1.run(cfg, str(quick["root"] / "res" / "t1seeds"))
  d = t1["summary"]["FC10(1e-2)"]["mean_distortion"]
  assert d["n"] == 2 and len(d["values"]) == 2 and d["sd"] > 0
  assert " ± " in tables.table1(t1, cfg)
  held, detail = claims.decay_raises_distortion({"table1": t1})
  assert isinstance(held, bool) and "±" in detail


@pytest.mark.slow
def test_table34_quick(t34):
  m = t34["table4"]
  for name in c_t34.MODELS:  # (quick models' distortions exceed 0.1, so
    assert m[name][name]["mean"] == 1.0  # "amplifying" to 0.1 may shrink them)
  assert len(m) == 3 + 3 + 2 and len(t34["table3"]) == 3


@pytest.mark.slow
def test_figures_quick(quick):
  res = quick["root"] / "res" / "figures"
  out = figures.run(_q(c_fig, quick), str(res))
  assert all(0 <= v["noise_error_same_distortion"] <= 1 for v in out["models"].values())
  assert os.path.exists(res / "adversarial_examples.png")


@pytest.mark.slow
def test_certify_brackets_the_minimal_distortion(quick):
  """The quick-trained FC10 and FC100-100-10: every radius below the attack's
  distance (the run stops otherwise), exact = the attack's bracket on FC10."""
  res = quick["root"] / "res" / "certify"
  cfg = _q(c_cert, quick, models=("FC10(1e-4)", "FC100-100-10"), n_images=12, n_conv=12,
           more_seeds=(1,), more_seeds_models=("FC10(1e-4)",))  # seed 1: random init
  out = _exec(certify, c_cert, cfg, res)
  sp = certify.spread(out)
  assert sp["FC10(1e-4)"]["median_ratio/exact"]["n"] == 2
  assert sp["FC100-100-10"]["median_ratio/crown"]["n"] == 1
  assert set(out["seeds"]["FC10(1e-4)"]) == {"0", "1"}
  fc10 = out["models"]["FC10(1e-4)"]["methods"]
  assert fc10["exact"]["mean_l2"] == pytest.approx(fc10["crown"]["mean_l2"], rel=1e-4)
  assert fc10["lipschitz"]["mean_l2"] <= fc10["exact"]["mean_l2"]
  mlp = out["models"]["FC100-100-10"]["methods"]
  assert mlp["crown"]["mean_l2"] >= mlp["ibp"]["mean_l2"] and "exact" not in mlp
  assert os.path.exists(res / "bracket_FC100-100-10.png")


def test_certify_conv_options():
  """The conv net's CROWN: per-unit Lipschitz cuts by default; with
  conv_patches, patches + fc1's dense pass in conv_dtype (its own cache folder);
  every other net and method as given."""
  cfg = c_cert.get_config()
  assert certify._options(cfg, "conv", "crown") == (
      CertifyOptions(rtol=cfg.conv_rtol, lipschitz_units=True), "crown+units")
  p = dataclasses.replace(cfg, conv_patches=True, conv_dtype="float32")
  opts, folder = certify._options(p, "conv", "crown")
  assert (opts.patches, opts.crown_budget, opts.dtype, folder) == (
      True, 1 << 23, "float32", "crown+patches+fc32")
  assert certify._options(p, "conv", "ibp")[1] == "ibp+units"
  assert certify._options(p, "FC100-100-10", "crown") == (CertifyOptions(), "crown")


@pytest.mark.slow
def test_adv_training_quick(fake_mnist, tmp_path):
  """The variants × seeds loop (pools: the search's test below)."""
  cfg = _quick(c_adv, tmp_path / "runs", fake_mnist, only=("dropout",))
  out = adv_training.run(cfg, str(tmp_path / "res"))
  assert [r["variant"] for r in out["rows"]] == ["dropout"]
  assert out["summary"]["dropout"]["test_err"]["n"] == 1
  for r in out["rows"]:
    assert 0.0 <= r["test_err"] <= 1.0 and r["mean_distortion"] > 0


@pytest.mark.slow
def test_adv_search_writes_cells_and_resumes(fake_mnist, tmp_path):
  cfg = _quick(c_search, tmp_path / "runs", fake_mnist, only=("space sigmoid2",))
  out = adv_search.run(cfg, str(tmp_path / "res"))
  assert [c["cell"] for c in out["cells"]] == ["space sigmoid2"]
  assert [p["layer"] for p in out["cells"][0]["pools"]] == ["sigmoid2"]
  again = adv_search.run(cfg, str(tmp_path / "res"))  # finished cells are read back
  assert again["cells"] == out["cells"]


def _reproduce_one_step(quick, step, **kw):
  """reproduce's config running `step` only (its models are the fixture's)."""
  return _q(c_rep, quick, skip=tuple(s for s in c_rep.STEPS if s != step), **kw)


@pytest.mark.slow
def test_reproduce_records_steps_resumes_and_leaves_the_step_folders_alone(quick, tmp_path):
  """One Table 3/4 step: run into steps_dir (its default folder untouched),
  then a rerun finds it complete."""
  steps = tmp_path / "steps"
  cfg = _reproduce_one_step(quick, "table34", steps_dir=str(steps))
  cwd = os.getcwd()
  os.chdir(quick["root"])  # a default step folder would be experiments/results/quick/ there
  try:
    default = os.path.join("experiments", "results", "quick", "table34", "results.json")
    before = os.path.getmtime(default) if os.path.exists(default) else None
    first = reproduce.run(cfg, str(tmp_path / "rep"))
    after = os.path.getmtime(default) if os.path.exists(default) else None
    second = reproduce.run(cfg, str(tmp_path / "rep"))
  finally:
    os.chdir(cwd)
  step = [s for s in first["steps"] if s["step"] == "table34"][0]
  assert step["status"] == "ran" and step["wall_seconds"] > 0 and step["peak_rss_mib"] > 0
  assert (steps / "table34" / "results.json").exists()
  assert after == before  # the step's own folder was not written
  assert [s for s in second["steps"] if s["step"] == "table34"][0]["status"].startswith(
      "complete")
  assert any("python -m experiments.bench_attack" in s for s in first["separate"])


def test_save_each_writes_the_results_after_each_item(tmp_path):
  """An interrupt keeps every item finished before it, marked incomplete."""
  cfg, rows = c_t1.get_config(True), []
  markdown = lambda res, cfg: f"{len(res['rows'])} rows"
  with pytest.raises(KeyboardInterrupt):
    for i in common.save_each(range(3), str(tmp_path), cfg, c_t1, markdown,
                              lambda: {"rows": rows}):
      if i == 2:
        raise KeyboardInterrupt
      rows.append(i)
  res = common.read_json(tmp_path / "results.json")
  assert res["rows"] == [0, 1] and res["complete"] is False and res["quick"]
  assert "2 rows" in (tmp_path / "results.md").read_text()
  assert not common.is_complete(str(tmp_path), cfg)


def test_overrides_coerce_and_reject():
  cfg = c_t1.get_config(True)
  cfg2 = common.override(cfg, "attack.bisect_steps", "5")
  assert cfg2.attack.search.bisect_steps == 5 and isinstance(cfg2.attack.search.bisect_steps, int)
  assert common.override(cfg, "n_train", "none").n_train is None
  assert common.override(cfg, "models", "FC10(1),FC100-100-10").models == ("FC10(1)", "FC100-100-10")
  assert common.override(cfg, "progress", "false").progress is False
  with pytest.raises(ValueError, match="no field"):
    common.override(cfg, "nope", "1")
  with pytest.raises(ValueError, match="expected a int"):
    common.override(cfg, "n_images", "many")
  with pytest.raises(ValueError, match="record"):
    common.override(cfg, "attack", "x")


def test_only_writes_a_partial_folder_and_command_round_trips():
  cfg, workdir = common.parse_flags(["--quick", "--only", "FC10(1)", "--config.n_images=7"], c_t1)
  assert workdir is None and cfg.only == ("FC10(1)",)
  partial = os.path.join("experiments", "results", "partial")
  assert common.default_workdir(c_t1, cfg).startswith(partial)
  full, _ = common.parse_flags(["--config.attack.maxiter=50", "--config.seeds=0,1"], c_t1)
  assert common.default_workdir(c_t1, full).startswith(partial)  # not the committed table
  seeds, _ = common.parse_flags(["--config.seeds=0,1,2"], c_t1)
  assert common.default_workdir(c_t1, seeds) == os.path.join("experiments", "results", "table1")
  cmd = common.command(c_t1, cfg)
  words = [w for w in shlex.split(cmd) if not w.startswith("ADVJAX_DATA_DIR=")]
  assert words[:3] == ["python", "-m", "experiments.table1"]
  assert common.parse_flags(words[3:], c_t1)[0] == cfg
  with pytest.raises(ValueError, match="not rows"):
    cfg.selected(("FC10(1e-4)",))


def test_summarize_and_stat():
  s = common.summarize([0.1, 0.3])
  assert s["n"] == 2 and np.isclose(s["mean"], 0.2) and np.isclose(s["sd"], np.sqrt(0.02))
  assert tables.stat(s, pct=True) == "20.00 ± 14.14%"
  assert tables.stat(common.summarize([0.5])) == "0.5000"
  assert json.loads(json.dumps(common.plain(c_t1.get_config())))["attack"]


def test_noise_distortion_matches_sigma():
  x = np.full((200, 28, 28, 1), 0.5, np.float32)  # far from the box edges
  xn = evaluate.gaussian_noise(jax.random.PRNGKey(0), x, 0.1)
  np.testing.assert_allclose(evaluate.distortion(xn - x).mean(), 0.1, rtol=0.01)


def test_noise_like_matches_target_rms():
  x = np.random.default_rng(0).uniform(0, 1, (6, 28, 28, 1)).astype(np.float32)
  want = np.linspace(0.02, 0.2, 6)
  xn = protocol.noise_like(jax.random.PRNGKey(0), x, want)
  np.testing.assert_allclose(evaluate.distortion(xn - x), want, rtol=1e-3)
  with pytest.raises(ValueError, match="target_rms"):
    protocol.noise_like(jax.random.PRNGKey(0), x, want[:2])


def test_amplify_rescales_to_rms():
  rng = np.random.default_rng(0)
  x = np.full((5, 10), 0.5, np.float32)
  r = rng.normal(0, 0.01, (5, 10)).astype(np.float32)
  xa = evaluate.amplify(x, r, 0.1)
  np.testing.assert_allclose(evaluate.distortion(xa - x), 0.1, rtol=1e-5)
  np.testing.assert_array_equal(evaluate.amplify(x, np.zeros_like(r), 0.1), x)
