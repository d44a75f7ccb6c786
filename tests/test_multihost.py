"""Multi-host for real: two processes joined by jax.distributed on localhost.

Each process is a CPU 'host' with two forced devices; `advjax attack
--distributed` shards every batch over the four devices of both, process 0
writes, and an interrupted two-process job resumes. The merged results must
equal a one-process run over the same four devices.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from test_driver import cli_job  # noqa: F401  (the fixture)

ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
           JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run_two(argv: list[str], timeout: int = 240) -> list[str]:
  """Runs the CLI as processes 0 and 1 of one job; returns their outputs."""
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "advjax.cli", *argv, "--distributed",
       "--coordinator", f"localhost:{port}", "--num-processes", "2",
       "--process-id", str(i)], env=ENV, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=timeout)[0])
  finally:
    for p in procs:
      p.kill()
  for p, o in zip(procs, outs):
    assert p.returncode == 0, o[-3000:]
  return outs


def test_two_processes_equal_one(tmp_path, cli_job):  # noqa: F811
  two = str(tmp_path / "two.npz")
  argv = cli_job + ["--output", two, "--batch-size", "4"]
  out = _run_two(argv + ["--stop-after", "1"])  # interrupted after one batch
  assert "stopped early" in out[0] and not os.path.exists(two)
  _run_two(argv)  # resumes: the second batch only
  assert os.path.exists(two)
  one = str(tmp_path / "one.npz")
  env4 = dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  r = subprocess.run([sys.executable, "-m", "advjax.cli",
                      *cli_job, "--output", one, "--batch-size", "4"],
                     env=env4, capture_output=True, text=True, timeout=240)
  assert r.returncode == 0, r.stdout + r.stderr
  a, b = np.load(two), np.load(one)
  assert sorted(a.files) == sorted(b.files) and len(a["index"]) == 6
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert a["success"].all()


@pytest.mark.parametrize("bad", [["--batch-size", "3"]])  # 4 devices in all
def test_two_processes_refuse_a_bad_job_together(tmp_path, cli_job, bad):  # noqa: F811
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "advjax.cli", *cli_job, "--output",
       str(tmp_path / "x.npz"), *bad, "--distributed", "--coordinator",
       f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
      env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=240)[0] for p in procs]
  for p, o in zip(procs, outs):
    assert p.returncode == 2 and "multiple of the 4 devices" in o, o[-2000:]


def test_a_failed_write_on_process_0_stops_both(tmp_path, cli_job):  # noqa: F811
  out = str(tmp_path / "w.npz")
  blocker = tmp_path / "w.npz.parts" / "part-00000.npz"  # a folder: the rename fails
  (blocker / "keep").mkdir(parents=True)
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "advjax.cli", *cli_job, "--output", out, "--batch-size", "4",
       "--distributed", "--coordinator", f"localhost:{port}", "--num-processes", "2",
       "--process-id", str(i)], env=ENV, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=240)[0] for p in procs]  # a hang fails here
  finally:
    for p in procs:
      p.kill()
  assert all(p.returncode != 0 for p in procs), outs
  assert "could not write batch 0" in outs[1], outs[1][-2000:]
  assert not os.path.exists(out)


def test_ddn_on_two_processes_equals_one(tmp_path, cli_job):  # noqa: F811
  two, one = str(tmp_path / "two.npz"), str(tmp_path / "one.npz")
  argv = cli_job + ["--method", "ddn", "--ddn-steps", "20", "--batch-size", "4"]
  _run_two(argv + ["--output", two])
  env4 = dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  r = subprocess.run([sys.executable, "-m", "advjax.cli", *argv, "--output", one],
                     env=env4, capture_output=True, text=True, timeout=240)
  assert r.returncode == 0, r.stdout + r.stderr
  a, b = np.load(two), np.load(one)
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_processes_that_disagree_stop_together(tmp_path, cli_job):  # noqa: F811
  port = _free_port()
  out = str(tmp_path / "m.npz")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "advjax.cli", *cli_job, "--output", out, "--seed", str(i),
       "--distributed", "--coordinator", f"localhost:{port}", "--num-processes", "2",
       "--process-id", str(i)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, o in zip(procs, outs):
    assert p.returncode == 2 and "disagree" in o and "targets" in o, o[-2000:]
  assert not os.path.exists(out)


def test_a_killed_peer_stops_the_other_with_one_line(tmp_path, cli_job):  # noqa: F811
  import time
  port = _free_port()
  out = str(tmp_path / "k.npz")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "advjax.cli", *cli_job, "--output", out, "--batch-size", "4",
       "--peer-timeout", "5", "--distributed", "--coordinator", f"localhost:{port}",
       "--num-processes", "2", "--process-id", str(i)], env=ENV, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    t0 = time.monotonic()
    while not os.path.exists(out + ".parts") and time.monotonic() - t0 < 120:
      time.sleep(0.05)  # both processes have joined and agreed on the job
    procs[1].kill()
    t1 = time.monotonic()
    o = procs[0].communicate(timeout=90)[0]
    waited = time.monotonic() - t1
  finally:
    for p in procs:
      p.kill()
  assert procs[0].returncode == 3, o[-2000:]
  assert "process 1 has not responded for 5 s" in o and waited < 30, (waited, o[-2000:])
  rerun = subprocess.run([sys.executable, "-m", "advjax.cli", *cli_job, "--output", out,
                          "--batch-size", "4"], env=dict(
                              ENV, XLA_FLAGS="--xla_force_host_platform_device_count=4"),
                         capture_output=True, text=True, timeout=240)
  assert rerun.returncode == 0 and os.path.exists(out), rerun.stdout + rerun.stderr
