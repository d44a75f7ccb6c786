"""Tests of the dataset-scale driver (resume, sharding) and the `advjax` CLI."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from advjax import attacks, driver

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


def test_resume_equals_uninterrupted(tmp_path):
  x, y, t = _data()
  full = driver.run(logits_fn, x, t, str(tmp_path / "a"), label=y, batch_size=4,
                    progress=False, bisect_steps=4)
  part = driver.run(logits_fn, x, t, str(tmp_path / "b"), label=y, batch_size=4,
                    progress=False, bisect_steps=4, stop_after=1)
  assert len(part["index"]) == 4 and not driver.is_complete(str(tmp_path / "b"))
  rest = driver.run(logits_fn, x, t, str(tmp_path / "b"), label=y, batch_size=4,
                    progress=False, bisect_steps=4)
  assert driver.is_complete(str(tmp_path / "b"))
  assert sorted(full) == sorted(rest)
  for k in full:
    np.testing.assert_array_equal(full[k], rest[k], err_msg=k)
  np.testing.assert_array_equal(full["index"], np.arange(10))  # padding dropped
  direct = attacks.lbfgs(logits_fn, x[8:], t[8:], bisect_steps=4)
  np.testing.assert_allclose(full["distortion"][8:], direct.distortion, rtol=2e-3)
  prog = json.load(open(tmp_path / "b" / driver.PROGRESS))
  assert prog["done"] == [0, 1, 2]


def test_other_run_in_same_dir_is_refused(tmp_path):
  x, y, t = _data(4)
  driver.run(logits_fn, x, t, str(tmp_path), batch_size=4, progress=False,
             bisect_steps=4)
  with pytest.raises(ValueError, match="different run"):
    driver.run(logits_fn, x, (t + 1) % K, str(tmp_path), batch_size=4,
               progress=False, bisect_steps=4)


SHARDED = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    sys.path.insert(0, os.path.dirname(sys.argv[1]))
    from test_driver import logits_fn, _data
    from advjax import driver
    assert len(jax.devices()) == 4, jax.devices()
    x, y, t = _data(8)
    a = driver.run(logits_fn, x, t, sys.argv[2] + "/4", batch_size=4,
                   progress=False, bisect_steps=4)
    b = driver.run(logits_fn, x, t, sys.argv[2] + "/1", batch_size=4,
                   devices=jax.devices()[:1], progress=False, bisect_steps=4)
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


def test_four_devices_equal_one(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SHARDED, __file__, str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
  assert "SHARDED-OK" in out.stdout, out.stdout + out.stderr


def test_cli_writes_loadable_npz(tmp_path):
  from advjax import checkpoint, cli, data, models
  rng = np.random.default_rng(0)
  d = tmp_path / "mnist"
  d.mkdir()
  data.write_idx(str(d / "t10k-images-idx3-ubyte.gz"),
                 rng.integers(0, 256, (6, 28, 28), dtype=np.uint8))
  data.write_idx(str(d / "t10k-labels-idx1-ubyte.gz"),
                 rng.integers(0, 10, 6).astype(np.uint8))
  m = models.get_model("FC10(1e-4)")
  checkpoint.save(str(tmp_path / "ckpt"), m, m.init(jax.random.PRNGKey(0)))
  out = str(tmp_path / "adv.npz")
  argv = ["attack", "--checkpoint", str(tmp_path / "ckpt"), "--data-dir", str(d),
          "--output", out, "--batch-size", "4", "--bisect-steps", "3", "--no-progress"]
  assert cli.main(argv + ["--stop-after", "1"]) == 0 and not os.path.exists(out)
  assert cli.main(argv) == 0
  z = np.load(out)
  for k in ("x_adv", "r", "success", "target", "label", "distortion", "index"):
    assert k in z and len(z[k]) == 6, k
  assert np.all(z["target"] != z["label"]) and z["x_adv"].min() >= 0
