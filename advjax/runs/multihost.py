"""The driver's collectives: every process runs the same job, or none does.

Each process passes the same host inputs; arrays are sharded over all devices
of all processes and gathered back; process 0 writes. Before any work the
processes compare their job identities part by part (`agree`), so processes
given different checkpoints, inputs or options stop together with one line
naming the part, instead of mixing their results in one folder.
"""

from __future__ import annotations

import threading

import jax
import numpy as np
from jax.sharding import NamedSharding

from advjax.runs import identity

PEER_TIMEOUT = 30.0  # seconds after which a silent peer stops the others
# Set by `end`: the watchdog's errors after it are the planned shutdown, not a lost
# peer (the watchdog is already one daemon thread per process).
_ENDING = threading.Event()


def _utils():
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return multihost_utils


def many() -> bool:
  return jax.process_count() > 1


def to_global(a: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array (the same on every process) as an array sharded over the mesh."""
  return jax.make_array_from_callback(a.shape, sharding, lambda i: a[i])


def to_host(a: jax.Array) -> np.ndarray:
  """The full array on the host (gathered across processes when multi-host)."""
  if many():
    return np.asarray(_utils().process_allgather(a, tiled=True))
  return np.asarray(a)


def broadcast(a: np.ndarray) -> np.ndarray:
  """Process 0's value of `a` on every process."""
  return np.asarray(_utils().broadcast_one_to_all(a)) if many() else a


def barrier(name: str) -> None:
  """Waits for every process (a no-op with one)."""
  if many():
    _utils().sync_global_devices(name)


def agree(job: dict) -> None:
  """Raises on every process unless all processes run the same job.

  Each part of the job identity is digested to 8 bytes; the digests of all
  processes are gathered and compared with process 0's.
  """
  if not many():
    return
  keys = sorted(job)
  mine = np.array([list(bytes.fromhex(identity.fingerprint(job[k]))[:8]) for k in keys],
                  np.uint8)
  allp = np.asarray(_utils().process_allgather(mine))  # (processes, parts, 8)
  bad = sorted({keys[j] for p in range(len(allp)) for j in range(len(keys))
                if not np.array_equal(allp[p, j], allp[0, j])})
  if bad:
    who = [p for p in range(len(allp)) if not np.array_equal(allp[p], allp[0])]
    raise ValueError(f"the processes disagree on the job (process(es) {who} differ from "
                     f"process 0 in: {', '.join(bad)}); run the same command, with the "
                     "same checkpoint, data and options, on every process.")


def agree_flag(failed: bool) -> bool:
  """Whether process 0 reported a failure (every process gets its answer)."""
  return bool(broadcast(np.int32(failed))) if many() else failed


def watchdog(timeout: float = PEER_TIMEOUT, every: float = 2.0) -> None:
  """Ends this process with one line (exit 3) when a peer stops responding.

  Each process writes a heartbeat into jax.distributed's key-value store every
  `every` seconds and reads its peers'; a peer silent for `timeout` seconds
  (killed, crashed), or a coordinator that cannot be reached, ends this process
  within about `timeout` + `every` seconds, instead of jax's own abort after its
  heartbeat timeout (100 s, a C++ stack trace). The finished batches are kept;
  a rerun resumes. A daemon thread; started by the CLI after
  `jax.distributed.initialize`.
  """
  import os  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  _ENDING.clear()
  client = distributed.global_state.client
  if client is None or not many():
    return
  me, n = jax.process_index(), jax.process_count()

  def stop(why: str) -> None:
    print(f"advjax: {why}; the finished batches are kept: rerun the same command on "
          "every process to resume.", file=sys.stderr, flush=True)
    os._exit(3)  # pylint: disable=protected-access  (a thread cannot raise in main)

  def loop() -> None:
    seen = {p: (None, time.monotonic()) for p in range(n) if p != me}
    beat = 0
    while not _ENDING.is_set():
      beat += 1
      try:
        client.key_value_set(f"advjax/alive/{me}", str(beat), allow_overwrite=True)
        for p in seen:
          try:
            v = client.key_value_try_get(f"advjax/alive/{p}")
          except Exception:  # pylint: disable=broad-except  (not written yet)
            v = None
          last, since = seen[p]
          if v != last:
            seen[p] = (v, time.monotonic())
          elif time.monotonic() - since > timeout and not _ENDING.is_set():
            stop(f"process {p} has not responded for {timeout:.0f} s (killed or crashed?)")
      except Exception as e:  # pylint: disable=broad-except  (the coordinator is gone)
        if _ENDING.is_set():
          return  # the run's planned end
        stop(f"the coordinator (process 0) cannot be reached ({type(e).__name__})")
      time.sleep(every)

  threading.Thread(target=loop, daemon=True, name="advjax-watchdog").start()


def end() -> None:
  """Ends a multi-process run on purpose, on every process: stops the watchdog,
  then `jax.distributed.shutdown`, whose barrier keeps process 0 (the
  coordinator) up until every process has stopped talking to it. Without it a
  peer still finishing saw the coordinator gone and exited 3 (seen once in a
  fresh clone's suite, test_two_processes_equal_one)."""
  _ENDING.set()
  if many():
    jax.distributed.shutdown()
