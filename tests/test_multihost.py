"""Multi-host for real: two processes joined by jax.distributed on localhost.

Each process is a CPU 'host' with two forced devices; `advjax attack
--distributed` shards every batch over the four devices of both, process 0
writes, and an interrupted two-process job resumes. The merged results must
equal a one-process run over the same four devices.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import distributed, free_port, processes

pytestmark = pytest.mark.slow  # each test starts 2-3 Python processes


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """The children's environment for n forced CPU devices; one persistent
  compilation cache, so a program one child compiled is read by the next."""
  base = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
              JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return lambda n: dict(base, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")


def _run_two(argv, env) -> list[str]:
  """Runs the CLI as processes 0 and 1 of one job; returns their outputs."""
  codes, outs = distributed(argv, env(2))
  for c, o in zip(codes, outs):
    assert c == 0, o[-3000:]
  return outs


def _run_one(argv, env):
  """The same job in one process over 4 devices (the reference)."""
  r = subprocess.run([sys.executable, "-m", "advjax.cli", *argv], env=env(4),
                     capture_output=True, text=True, timeout=240)
  assert r.returncode == 0, r.stdout + r.stderr
  return r


def test_two_processes_equal_one(tmp_path, cli_job, env):
  two = str(tmp_path / "two.npz")
  argv = cli_job + ["--output", two, "--batch-size", "4"]
  out = _run_two(argv + ["--stop-after", "1"], env)  # interrupted after one batch
  assert "stopped early" in out[0] and not os.path.exists(two)
  _run_two(argv, env)  # resumes: the second batch only
  assert os.path.exists(two)
  one = str(tmp_path / "one.npz")
  _run_one(cli_job + ["--output", one, "--batch-size", "4"], env)
  a, b = np.load(two), np.load(one)
  assert sorted(a.files) == sorted(b.files) and len(a["index"]) == 6
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert a["success"].all()


def test_two_processes_refuse_a_bad_job_together(tmp_path, cli_job, env):
  bad = ["--batch-size", "3"]  # 4 devices in all
  codes, outs = distributed(cli_job + ["--output", str(tmp_path / "x.npz"), *bad], env(2))
  for c, o in zip(codes, outs):
    assert c == 2 and "multiple of the 4 devices" in o, o[-2000:]


def test_a_failed_write_on_process_0_stops_both(tmp_path, cli_job, env):
  out = str(tmp_path / "w.npz")
  blocker = tmp_path / "w.npz.parts" / "part-00000.npz"  # a folder: the rename fails
  (blocker / "keep").mkdir(parents=True)
  codes, outs = distributed(cli_job + ["--output", out, "--batch-size", "4"], env(2))
  assert all(c != 0 for c in codes), outs
  assert "could not write batch 0" in outs[1], outs[1][-2000:]
  assert not os.path.exists(out)


def test_ddn_on_two_processes_equals_one(tmp_path, cli_job, env):
  two, one = str(tmp_path / "two.npz"), str(tmp_path / "one.npz")
  argv = cli_job + ["--method", "ddn", "--ddn-steps", "20", "--batch-size", "4"]
  _run_two(argv + ["--output", two], env)
  _run_one(argv + ["--output", one], env)
  a, b = np.load(two), np.load(one)
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_processes_that_disagree_stop_together(tmp_path, cli_job, env):
  out = str(tmp_path / "m.npz")
  codes, outs = distributed(cli_job + ["--output", out], env(2),
                            per_process=lambda i: ["--seed", str(i)])
  for c, o in zip(codes, outs):
    assert c == 2 and "disagree" in o and "targets" in o, o[-2000:]
  assert not os.path.exists(out)


def test_a_killed_peer_stops_the_other_with_one_line(tmp_path, cli_job, env):
  port = free_port()
  out = str(tmp_path / "k.npz")
  commands = [[sys.executable, "-m", "advjax.cli", *cli_job, "--output", out,
               "--batch-size", "4", "--peer-timeout", "5", "--distributed",
               "--coordinator", f"localhost:{port}", "--num-processes", "2",
               "--process-id", str(i)] for i in range(2)]
  with processes(commands, env(2)) as procs:
    t0 = time.monotonic()
    while not os.path.exists(out + ".parts") and time.monotonic() - t0 < 120:
      time.sleep(0.05)  # both processes have joined and agreed on the job
    procs[1].kill()
    t1 = time.monotonic()
    o = procs[0].communicate(timeout=90)[0]
    waited = time.monotonic() - t1
  assert procs[0].returncode == 3, o[-2000:]
  assert "process 1 has not responded for 5 s" in o and waited < 30, (waited, o[-2000:])
  _run_one(cli_job + ["--output", out, "--batch-size", "4"], env)  # the rest, alone
  assert os.path.exists(out)
