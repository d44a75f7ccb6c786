"""Shared test helpers: the tiny attack model, synthetic IDX folders, the MNIST
folder when present, a CLI job, and child processes that are always reaped.

Test files import the plain helpers (`from conftest import K, logits_fn`) and
get the fixtures by name; no test file imports another.
"""

import contextlib
import gc
import os
import socket
import subprocess
import sys

# Compile time, not run time, is most of the suite (thousands of distinct XLA
# programs, each run briefly): XLA:CPU's older emitters compile them about a third faster
# (certificates 11.9 → 7.5 s for four programs; the suite 805 → 583–648 s on two
# workers) and run the small nets here as fast or ≤ 15% slower (BUILD_NOTES §6).
# Set before jax starts its backend; child processes inherit it. The library
# sets no flag: long runs keep XLA's default.
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_use_fusion_emitters=false").strip()

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import data

K = 5  # the tiny model's classes
SHAPE = (6, 6, 1)  # its 36 "pixels"


def tiny_params(seed=0):
  """Weights of the tiny sigmoid MLP (36 -> 16 -> K)."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  n = int(np.prod(SHAPE))
  return (jax.random.normal(k1, (n, 16)) / np.sqrt(n) * 3,
          jax.random.normal(k2, (16, K)) * 1.5, jax.random.normal(k3, (K,)) * 0.1)


PARAMS = tiny_params()


def tiny_apply(params, x):
  """The tiny MLP with its parameters as an argument (the (apply_fn, params) kind)."""
  W1, W2, b = params
  return jax.nn.sigmoid(x.reshape(x.shape[0], -1) @ W1 - 1.5) @ W2 + b


def logits_fn(x):
  """The tiny sigmoid MLP on (B, 6, 6, 1) or (B, 36) inputs, weights closed over."""
  return tiny_apply(PARAMS, x)


def tiny_data(B, seed=1):
  """B uniform inputs of the tiny model and its predicted labels."""
  x = jax.random.uniform(jax.random.PRNGKey(seed), (B,) + SHAPE)
  pred = jnp.argmax(logits_fn(x), -1)
  return np.asarray(x), np.asarray(pred)


def free_port() -> int:
  """A TCP port on localhost that nothing listens on now."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def processes(commands, env=None):
  """Starts each command (stdout and stderr together, text); on leaving, kills
  and reaps every one still running, so no stray child outlives its test (nor
  joins a later test's rendezvous)."""
  procs = []
  try:
    for cmd in commands:
      procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True))
    yield procs
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()  # reaped: no zombie, no stray process
      if p.stdout:
        p.stdout.close()


def distributed(argv, env, n=2, per_process=lambda i: [], timeout=240):
  """Runs `advjax.cli argv` as processes 0..n-1 of one job on a fresh port;
  returns (return codes, outputs) once all have ended (a hang fails here)."""
  port = free_port()
  commands = [[sys.executable, "-m", "advjax.cli", *argv, *per_process(i),
               "--distributed", "--coordinator", f"localhost:{port}",
               "--num-processes", str(n), "--process-id", str(i)] for i in range(n)]
  with processes(commands, env) as procs:
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    return [p.returncode for p in procs], outs


def write_idx_folder(folder, splits: dict) -> None:
  """The four IDX files of `splits` {'train'|'t10k': (uint8 images, labels)}."""
  for prefix, (x, y) in splits.items():
    data.write_idx(str(folder / f"{prefix}-images-idx3-ubyte.gz"), x)
    data.write_idx(str(folder / f"{prefix}-labels-idx1-ubyte.gz"), y)


@pytest.fixture(scope="session", autouse=True)
def no_download():
  """No test reaches the network: MNIST's mirror is a closed local port (the
  download tests serve their own, tests/test_download.py); children inherit it."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(data.MIRROR_VAR, "http://127.0.0.1:9/")
    yield


@pytest.fixture(scope="module", autouse=True)
def fresh_compilations():
  """Drops jax's compiled executables after each test module. XLA:CPU maps
  each executable into ~1,000 memory regions (a certificate's), and the
  kernel allows 65,530 per process: the whole suite in one process ran out
  ("LLVM compilation error: Cannot allocate memory", then a segfault)."""
  yield
  jax.clear_caches()
  gc.collect()


@pytest.fixture
def cli_job(tmp_path):
  """A 6-image test split and a random-init FC10 checkpoint for the CLI."""
  from advjax import checkpoint, models  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  d = tmp_path / "mnist"
  d.mkdir()
  data.write_idx(str(d / "t10k-images-idx3-ubyte.gz"),
                 rng.integers(0, 256, (6, 28, 28), dtype=np.uint8))
  data.write_idx(str(d / "t10k-labels-idx1-ubyte.gz"),
                 rng.integers(0, 10, 6).astype(np.uint8))
  m = models.get_model("FC10(1e-4)")
  checkpoint.save(str(tmp_path / "ckpt"), m, m.init(jax.random.PRNGKey(0)))
  return ["attack", "--checkpoint", str(tmp_path / "ckpt"), "--data-dir", str(d),
          "--batch-size", "4", "--bisect-steps", "3", "--no-progress"]


@pytest.fixture
def idx_dir(tmp_path):
  """A folder with the four IDX files of a tiny synthetic MNIST (20 / 10 images)."""
  rng = np.random.default_rng(0)
  write_idx_folder(tmp_path, {
      prefix: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
               rng.integers(0, 10, n, dtype=np.uint8))
      for prefix, n in (("train", 20), ("t10k", 10))})
  return tmp_path


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory):
  """A learnable synthetic MNIST IDX folder (600 training / 200 test images).

  Each class is a fixed random pattern, mostly dark like a digit, plus noise,
  so the experiments' quick models learn it in their few epochs and every
  table has correctly classified images to attack (the flax examples' mock
  data, as files `advjax.data` reads).
  """
  rng = np.random.default_rng(0)
  folder = tmp_path_factory.mktemp("fake_mnist")
  prototypes = rng.random((10, 28, 28)) ** 3
  splits = {}
  for prefix, n in (("train", 600), ("t10k", 200)):
    y = rng.permutation(np.arange(n) % 10)
    x = np.clip(prototypes[y] + 0.25 * rng.normal(size=(n, 28, 28)), 0, 1)
    splits[prefix] = ((255 * x).round().astype(np.uint8), y.astype(np.uint8))
  write_idx_folder(folder, splits)
  return folder


@pytest.fixture(scope="session")
def mnist_dir():
  """The real MNIST IDX folder from $ADVJAX_DATA_DIR, or skip."""
  d = os.environ.get("ADVJAX_DATA_DIR")
  if not d or not os.path.exists(os.path.join(d, "t10k-labels-idx1-ubyte.gz")):
    pytest.skip("set ADVJAX_DATA_DIR to an MNIST IDX folder")
  return d
