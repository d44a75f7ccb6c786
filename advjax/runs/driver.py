"""Any per-example job over a whole dataset split, sharded and resumable (§4.2's engine).

A job (`jobs.Job`) is a small record: a batched jittable function of the
validated problem and one batch, its result fields and its identity. The
attack is one job (`jobs.attack`), DDN another (`jobs.ddn`), the certified
radius a third, a user's own a fourth (`jobs.register`). `execute` runs any of
them: it cuts the inputs into fixed-size batches (the
last one padded, so the job compiles once), shards each batch over all devices
of all processes along a 'batch' mesh axis, and writes every finished batch
to `out_dir/part-XXXXX.npz` plus `out_dir/progress.json`.

* A rerun of the same job skips the finished batches; a different job (model
  or weights, inputs, targets, labels, box, method, options, batch size) is
  refused, naming what differs. Records of older advjax are migrated
  (`identity.migrate`).
* One writer per folder: a second run into a busy folder is refused at once
  (`store.Lock`); every part records its slot and its job's fingerprint, and
  `collect` checks both.
* Multi-host (`jax.distributed.initialize()` first, the CLI's
  `--distributed`): the processes compare their jobs before any work and stop
  together, naming the part, if they differ; process 0 writes and reads
  out_dir (its progress is broadcast), so out_dir need not be shared, but the
  merged results `run` returns are complete on other processes only when
  they can read it.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from advjax import batching, inputs
from advjax.runs import identity, jobs, multihost, store
from advjax.runs.jobs import Job
from advjax.runs.store import ResumeError  # noqa: F401  (re-exported)

PROGRESS = "progress.json"
BATCH_SIZE = 128  # fastest on 2 CPU cores (BUILD_NOTES.md); on a GPU use more


def _check_batching(batch_size, devices, index, n: int):
  """(batch_size as int, index as (n,) array); ValueError saying what to pass."""
  batch_size = inputs.integer(batch_size, "batch_size")
  if batch_size % len(devices):
    raise ValueError(f"batch_size={batch_size} is not a multiple of the "
                     f"{len(devices)} devices; choose a multiple so batches shard evenly.")
  index = np.arange(n) if index is None else np.asarray(index)
  if index.shape != (n,):
    raise ValueError(f"index has shape {index.shape}; it must be ({n},) like x.")
  return int(batch_size), index


def execute(job: Job, pb: inputs.Problem, out_dir: str, *, index=None,
            batch_size: int = BATCH_SIZE, devices=None, stop_after: int | None = None,
            progress: bool = True, key=None) -> dict[str, np.ndarray]:
  """Runs `job` on the validated problem `pb` batch by batch into out_dir.

  index: (N,) dataset indices saved with the results (default arange(N));
  batch_size: a multiple of the device count (`BATCH_SIZE` is fastest on 2 CPU
  cores; on a GPU use more); devices: of the 'batch' mesh axis (default all,
  every process); stop_after: newly finished batches to run (to test
  resuming); progress: a tqdm bar (process 0 only); key: a PRNG key, folded
  per batch, for jobs that draw.

  Returns the merged results of all finished batches (`collect(out_dir)`).
  Raises ValueError for a bad job, `ResumeError` for a busy folder or one
  holding another job or foreign files.
  """
  devices = list(jax.devices() if devices is None else devices)
  if pb.n == 0:
    raise ValueError(f"x has shape {pb.x.shape}; the driver needs a non-empty batch (N, ...).")
  if stop_after is not None:
    inputs.integer(stop_after, "stop_after", 0)
  batch_size, index = _check_batching(batch_size, devices, index, pb.n)
  ident = identity.job_identity(job, pb, index, batch_size, key)
  multihost.agree(ident)
  nb = -(-pb.n // batch_size)
  writer = jax.process_index() == 0
  lock = store.Lock(out_dir, enabled=writer)
  try:
    done = _agreed_progress(out_dir, ident, nb, lock)
    _loop(job, pb, out_dir, ident, index, batch_size, devices, nb, done,
          stop_after, progress and writer, key)
  finally:
    lock.__exit__(None, None, None)
  multihost.barrier("advjax.runs.driver: parts written")
  return collect(out_dir)


def _loop(job, pb, out_dir, ident, index, batch_size, devices, nb, done, stop_after,
          show, key):
  """The batches not yet done, each run, gathered and written by process 0."""
  n, fp = pb.n, identity.fingerprint(ident)
  sharding = NamedSharding(Mesh(np.array(devices), ("batch",)), P("batch"))
  glob = lambda a, sl: None if a is None else multihost.to_global(
      batching.pad(np.asarray(a)[sl], batch_size), sharding)
  box = lambda a, sl: glob(a, sl) if pb.per_example_box else jax.numpy.asarray(a)
  todo = [i for i in range(nb) if i not in done]
  bar = _bar(nb, len(done), show, job.method)
  for k, i in enumerate(todo):
    if stop_after is not None and k >= stop_after:
      break
    sl = slice(i * batch_size, min(n, (i + 1) * batch_size))
    xb = batching.pad(pb.x[sl], batch_size)
    inputs.check_finite(pb.apply, pb.params, xb, batching.pad(index[sl], batch_size))
    res = job.fn(pb, glob(pb.x, sl), box(pb.lo, sl), box(pb.hi, sl), glob(pb.target, sl),
                 glob(pb.label, sl), None if key is None else jax.random.fold_in(key, i))
    out = {f: multihost.to_host(getattr(res, f))[:sl.stop - sl.start] for f in job.fields}
    out["index"] = index[sl]
    if pb.label is not None:
      out["label"] = np.asarray(pb.label)[sl]
    err = None
    if jax.process_index() == 0:
      try:
        store.write_part(out_dir, i, fp, out)
        done.add(i)
        store.atomic_json(os.path.join(out_dir, PROGRESS),
                       dict(job=ident, num_batches=nb, done=sorted(done)))
      except OSError as e:
        err = e
    _agree_written(err, out_dir, i)
    bar.update(1)
  bar.close()


def _agree_written(err: OSError | None, out_dir: str, i: int) -> None:
  """Raises on every process if process 0 could not write batch i, so that the
  others stop too instead of waiting in the next collective."""
  failed = multihost.agree_flag(err is not None)
  if err is not None:
    raise err
  if failed:
    raise OSError(f"process 0 could not write batch {i} to {out_dir}: see its error; "
                  "the finished batches are kept, rerun to resume.")


def _read_progress(out_dir: str) -> dict | None:
  """progress.json of out_dir, None if absent; ResumeError if corrupt."""
  path = os.path.join(out_dir, PROGRESS)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      prog = json.load(f)
    prog["done"], prog["job"]  # pylint: disable=pointless-statement
    return prog
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ResumeError(f"{path} is corrupt or from an older advjax ({e}); delete it (and "
                      "the part files beside it) to start this job over.") from e


def _check_progress(out_dir: str, job: dict) -> set[int]:
  """Finished batch indices of an earlier run of the same job in out_dir."""
  prog = _read_progress(out_dir)
  if prog is None:
    return set()
  diff = identity.differs(prog["job"], job)
  if diff:
    raise ResumeError(f"{out_dir} holds results of a different job (it differs in: "
                      f"{', '.join(diff)}); use a new output folder or delete it.")
  return {i for i in prog["done"] if os.path.exists(os.path.join(out_dir, store.PART.format(i)))}


def _agreed_progress(out_dir: str, job: dict, nb: int, lock: store.Lock) -> set[int]:
  """Process 0 takes the folder's lock and reads its progress; every process
  gets the verdict (so that all run the same batches even where out_dir is
  not shared)."""
  err, done = None, set()
  if jax.process_index() == 0:
    try:
      os.makedirs(out_dir, exist_ok=True)
      lock.__enter__()
      done = _check_progress(out_dir, job)
    except (ResumeError, OSError) as e:
      err = e
  if multihost.many():
    mask = np.zeros(nb + 1, np.int32)
    mask[sorted(done)] = 1
    mask[nb] = err is not None
    mask = multihost.broadcast(mask)
    done = set(np.flatnonzero(mask[:nb]).tolist())
    if mask[nb] and err is None:
      err = ResumeError(f"process 0 refused the job in {out_dir}: see its error.")
  if err is not None:
    raise err
  return done


def _bar(total: int, initial: int, enabled: bool, method: str):
  """A tqdm progress bar over batches (a no-op object when disabled)."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, initial=initial, unit="batch", disable=not enabled, desc=method)


def collect(out_dir: str) -> dict[str, np.ndarray]:
  """Merges exactly the part files progress.json lists, in batch order, each
  checked against its slot and the job's fingerprint."""
  prog = _read_progress(out_dir)
  if prog is None or not prog["done"]:
    return {}
  fp = identity.fingerprint(prog["job"])  # older parts carry none and pass
  loaded = [store.read_part(out_dir, i, fp) for i in sorted(prog["done"])]
  return {k: np.concatenate([d[k] for d in loaded]) for k in loaded[0]}


def is_complete(out_dir: str) -> bool:
  """Whether every batch of the job in out_dir has finished."""
  prog = _read_progress(out_dir)
  return prog is not None and len(prog["done"]) == prog["num_batches"]


def save(path: str, results: dict[str, np.ndarray]) -> None:
  """Writes merged results to one .npz (x_adv, r, success, target, label, ...)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  buf = io.BytesIO()
  np.savez(buf, **results)
  store.atomic_write(path, buf.getvalue())


def run(model: Any, x, target, out_dir: str, *, bounds=inputs.BOX, options=None,
        label=None, untargeted: str = "all", key=None, **engine) -> dict[str, np.ndarray]:
  """Attacks x (N, ...) batch by batch, appending results to out_dir (§4.1).

  Args:
    model: any model of `attack.lbfgs` (a pair (apply_fn, params) keeps the
      weights jit arguments).
    x: inputs (N, ...) inside the box (host array, the same on every process).
    target: (N,) int targets, or None for the untargeted modes.
    out_dir: where part-XXXXX.npz and progress.json go; reused to resume.
    bounds, options, untargeted, key: as `attack.lbfgs` (a fresh key per
      batch is folded from `key`); bounds may be per example (N, ...).
    label: (N,) true labels, saved (and used by untargeted attacks).
    **engine: `execute`'s keywords, with its defaults: index (N,) dataset
      indices saved with the results, batch_size (a multiple of the device
      count), devices (of the 'batch' mesh axis), stop_after (newly finished
      batches, to test resuming), progress (a tqdm bar on process 0).

  Returns:
    The merged results of all finished batches (`collect(out_dir)`).
  """
  job = jobs.attack(options, targeted=target is not None, untargeted=untargeted, key=key)
  pb = inputs.problem(model, x, bounds, target=target, label=label, check_logits=False)
  return execute(job, pb, out_dir, key=key, **engine)
