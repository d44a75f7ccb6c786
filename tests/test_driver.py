"""Tests of the dataset-scale driver (resume, sharding) and the `advjax` CLI."""

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from advjax import attack
from advjax.runs import driver
from advjax.runs import identity

OPTS = attack.AttackOptions(bisect_steps=4)

K = 4


def logits_fn(x):
  """A tiny random sigmoid MLP on (B, 4, 4, 1) inputs."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  W1 = jax.random.normal(k1, (16, 8)) * 0.8
  W2 = jax.random.normal(k2, (8, K)) * 2.
  return jax.nn.sigmoid(x.reshape(x.shape[0], -1) @ W1 - 1.) @ W2


def _data(n=10):
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (n, 4, 4, 1)))
  y = np.asarray(jax.numpy.argmax(logits_fn(x), -1))
  return x, y, (y + 1) % K


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
  x, y, t = _data()
  full = driver.run(logits_fn, x, t, str(tmp_path / "a"), label=y, batch_size=4,
                    progress=False, options=OPTS)
  part = driver.run(logits_fn, x, t, str(tmp_path / "b"), label=y, batch_size=4,
                    progress=False, options=OPTS, stop_after=1)
  assert len(part["index"]) == 4 and not driver.is_complete(str(tmp_path / "b"))
  rest = driver.run(logits_fn, x, t, str(tmp_path / "b"), label=y, batch_size=4,
                    progress=False, options=OPTS)
  assert driver.is_complete(str(tmp_path / "b"))
  assert sorted(full) == sorted(rest)
  for k in full:
    np.testing.assert_array_equal(full[k], rest[k], err_msg=k)
  np.testing.assert_array_equal(full["index"], np.arange(10))  # padding dropped
  direct = attack.lbfgs(logits_fn, x[8:], t[8:], options=OPTS)
  np.testing.assert_allclose(full["distortion"][8:], direct.distortion, rtol=2e-3)
  prog = json.load(open(tmp_path / "b" / driver.PROGRESS))
  assert prog["done"] == [0, 1, 2]


@pytest.mark.slow
def test_other_run_in_same_dir_is_refused(tmp_path):
  x, y, t = _data(4)
  driver.run(logits_fn, x, t, str(tmp_path), batch_size=4, progress=False,
             options=OPTS)
  with pytest.raises(driver.ResumeError, match="differs in: targets"):
    driver.run(logits_fn, x, (t + 1) % K, str(tmp_path), batch_size=4,
               progress=False, options=OPTS)


@pytest.mark.slow
def test_a_job_recorded_before_an_option_existed_resumes_only_if_it_behaves_alike(tmp_path):
  ident = identity.options
  assert "first_order_steps" not in ident(attack.PAPER) and "joint" not in ident(attack.PAPER)
  default = attack.AttackOptions()
  assert ident(default)["first_order_steps"] == default.first_order_steps > 0
  assert "first_order_alpha" not in ident(attack.PAPER)  # inert without the pass
  # a session-4 record (DDN pass, no step-size fields) is foolbox's step sizes
  s4 = default._replace(first_order_steps=50).flat()
  for k in ("first_order_alpha", "first_order_gamma", "first_order_unit"):
    s4.pop(k)
  assert ident(s4) == ident(default._replace(
      first_order_steps=50, first_order_alpha=1.0, first_order_gamma=0.05,
      first_order_unit="input")) != ident(default._replace(first_order_steps=50))
  x, y, t = _data(8)
  paper = attack.PAPER._replace(bisect_steps=3)
  driver.run(logits_fn, x, t, str(tmp_path), batch_size=4, progress=False,
             options=paper, stop_after=1)
  path = tmp_path / driver.PROGRESS
  prog = json.load(open(path))  # as an advjax without joint / first_order_steps wrote it
  for k in ("joint", "first_order_steps"):
    prog["job"]["options"].pop(k, None)
  json.dump(prog, open(path, "w"))
  done = driver.run(logits_fn, x, t, str(tmp_path), batch_size=4, progress=False,
                    options=paper)  # the same behaviour: resumed
  np.testing.assert_array_equal(done["index"], np.arange(8))
  json.dump(prog, open(path, "w"))
  with pytest.raises(driver.ResumeError, match="differs in: options"):
    driver.run(logits_fn, x, t, str(tmp_path), batch_size=4, progress=False,
               options=paper._replace(first_order_steps=50))


def _apply(params, x):
  W1, W2 = params
  return jax.nn.sigmoid(x.reshape(x.shape[0], -1) @ W1 - 1.) @ W2


def _weights(seed):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return jax.random.normal(k1, (16, 8)) * 0.8, jax.random.normal(k2, (8, K)) * 2.


@pytest.mark.slow
def test_other_model_or_retrained_weights_are_refused(tmp_path):
  x, y, t = _data(8)
  out = str(tmp_path / "job")
  driver.run((_apply, _weights(0)), x, t, out, batch_size=4, progress=False,
             options=OPTS, stop_after=1)  # a partial run
  with pytest.raises(driver.ResumeError, match="differs in: model"):  # retrained
    driver.run((_apply, _weights(1)), x, t, out, batch_size=4, progress=False,
               options=OPTS)
  other = lambda z: logits_fn(z) * 2.0  # another computation
  with pytest.raises(driver.ResumeError, match="differs in: model"):
    driver.run(other, x, t, out, batch_size=4, progress=False, options=OPTS)
  with pytest.raises(driver.ResumeError, match="differs in: bounds"):
    driver.run((_apply, _weights(0)), x, t, out, batch_size=4, progress=False,
               options=OPTS, bounds=(0, 2))
  # The same job, same weights as a new pair object: resumes.
  res = driver.run((_apply, _weights(0)), x, t, out, batch_size=4, progress=False,
                   options=OPTS)
  assert len(res["index"]) == 8 and driver.is_complete(out)


@pytest.mark.slow
def test_collect_reads_only_listed_parts_and_names_corrupt_files(tmp_path):
  x, y, t = _data(8)
  out = tmp_path / "job"
  driver.run(logits_fn, x, t, str(out), batch_size=4, progress=False, options=OPTS)
  (out / driver.PROGRESS).unlink()  # then a smaller job in the same folder
  small = driver.run(logits_fn, x[:4], t[:4], str(out), batch_size=4,
                     progress=False, options=OPTS)
  assert len(small["index"]) == 4  # part-00001 of the old job is not mixed in
  (out / "part-00000.npz").write_bytes(b"not an npz")
  with pytest.raises(driver.ResumeError, match="part-00000.npz is missing or corrupt"):
    driver.collect(str(out))
  (out / driver.PROGRESS).write_text("{ broken")
  with pytest.raises(driver.ResumeError, match="progress.json is corrupt.*delete"):
    driver.run(logits_fn, x[:4], t[:4], str(out), batch_size=4, progress=False)


@pytest.mark.parametrize("kw, msg", [
    (dict(target=np.array([2.7, 1.0, 0.0, 1.0])), "integers"),
    (dict(target=np.array([0, 1, 2, K])), r"\[0, 4\)"),
    (dict(label=np.array([0, 1])), "label has shape"),
    (dict(index=np.arange(3)), "index has shape"),
    (dict(batch_size=0), "batch_size=0: must be an integer >= 1"),
])
def test_driver_validates_like_lbfgs(tmp_path, kw, msg):
  x, y, t = _data(4)
  args = dict(target=t, label=y, batch_size=4)
  args.update(kw)
  target = args.pop("target")
  with pytest.raises(ValueError, match=msg):
    driver.run(logits_fn, x, target, str(tmp_path), progress=False, **args)
  assert not (tmp_path / driver.PROGRESS).exists()  # refused before any attack


SHARDED = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    sys.path.insert(0, os.path.dirname(sys.argv[1]))
    from test_driver import logits_fn, _data, OPTS
    from advjax.runs import driver
    assert len(jax.devices()) == 4, jax.devices()
    x, y, t = _data(8)
    a = driver.run(logits_fn, x, t, sys.argv[2] + "/4", batch_size=4,
                   progress=False, options=OPTS)
    b = driver.run(logits_fn, x, t, sys.argv[2] + "/1", batch_size=4,
                   devices=jax.devices()[:1], progress=False, options=OPTS)
    # Same lanes, same algorithm; only float rounding of the sharded matmuls
    # differs, which moves the optimiser's path slightly.
    for k in ("success", "target", "index"):
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in ("distortion", "l2"):
      np.testing.assert_allclose(a[k], b[k], rtol=1e-2, err_msg=k)
    np.testing.assert_allclose(a["x_adv"], b["x_adv"], atol=1e-2)
    try:
      driver.run(logits_fn, x, t, sys.argv[2] + "/6", batch_size=6, progress=False)
      raise SystemExit("batch 6 on 4 devices was accepted")
    except ValueError as e:
      assert "multiple" in str(e)
    print("SHARDED-OK", a["success"].mean())
""")


@pytest.mark.slow
def test_four_devices_equal_one(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SHARDED, __file__, str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
  assert "SHARDED-OK" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow
def test_cli_writes_loadable_npz(tmp_path, cli_job):
  from advjax import cli
  out = str(tmp_path / "adv.npz")
  argv = cli_job + ["--output", out]
  assert cli.main(argv + ["--stop-after", "1"]) == 0 and not os.path.exists(out)
  assert cli.main(argv) == 0
  z = np.load(out)
  for k in ("x_adv", "r", "success", "target", "label", "distortion", "index"):
    assert k in z and len(z[k]) == 6, k
  assert np.all(z["target"] != z["label"]) and z["x_adv"].min() >= 0


@pytest.mark.parametrize("extra, msg", [
    (["--n", "0"], "--n 0: must be >= 1"),
    (["--n", "-5"], "--n -5: must be >= 1"),
    (["--start", "6"], r"--start 6: .* 6 examples"),
    (["--start", "-100"], r"--start -100"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--maxiter", "0"], "maxiter"),
])
def test_cli_refuses_bad_jobs_in_one_line(tmp_path, cli_job, capsys, extra, msg):
  from advjax import cli
  out = tmp_path / "adv.npz"
  assert cli.main(cli_job + ["--output", str(out)] + extra) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and re.search(msg, err), err
  assert not (tmp_path / "adv.npz.parts").exists()  # refused before any attack


def test_cli_refuses_unwritable_outputs(tmp_path, cli_job, capsys):
  from advjax import cli
  for out in (str(tmp_path), "", str(tmp_path / "adv.txt")):  # a folder, empty, not .npz
    assert cli.main(cli_job + ["--output", out]) == 2
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  if not os.access(ro, os.W_OK):  # root can write anywhere: then skip this case
    assert cli.main(cli_job + ["--output", str(ro / "a.npz")]) == 2
  assert "must be a .npz" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_help_and_version():
  out = subprocess.run([sys.executable, "-m", "advjax.cli", "attack", "--help"],
                       capture_output=True, text=True, timeout=120).stdout
  assert "example:" in out and "(default: 10)" in out and "--coordinator" in out
  assert "--c-factor" in out and "bracket factor" in out
  v = subprocess.run([sys.executable, "-m", "advjax.cli", "--version"],
                     capture_output=True, text=True, timeout=120).stdout
  assert v.startswith("advjax ")


RESUME = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from test_driver import logits_fn, _data, OPTS
    from advjax.runs import driver
    x, y, t = _data(8)
    driver.run(logits_fn, x, t, sys.argv[2], batch_size=4, progress=False,
               options=OPTS, stop_after=1)
""")


@pytest.mark.slow
def test_plain_function_resumes_in_another_process(tmp_path):
  """The model fingerprint (traced program text + weights) is stable across processes."""
  out = str(tmp_path / "job")
  r = subprocess.run([sys.executable, "-c", RESUME, os.path.dirname(__file__), out],
                     capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stdout + r.stderr
  assert not driver.is_complete(out)
  x, y, t = _data(8)
  res = driver.run(logits_fn, x, t, out, batch_size=4, progress=False, options=OPTS)
  assert driver.is_complete(out) and len(res["index"]) == 8
  whole = driver.run(logits_fn, x, t, str(tmp_path / "whole"), batch_size=4,
                     progress=False, options=OPTS)
  for k in whole:
    np.testing.assert_array_equal(res[k], whole[k], err_msg=k)
