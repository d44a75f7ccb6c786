"""Attack a whole dataset split at scale, resumably (the §4.2 experiments' engine).

`run` validates the whole job on host arrays first (`advjax.checks`), cuts the
inputs into fixed-size batches (the last one padded, so the attack compiles
once), shards each batch over all devices of all processes along a 'batch'
mesh axis, and writes every finished batch to `out_dir/part-XXXXX.npz` plus
`out_dir/progress.json`. A rerun of the same job skips the finished batches; a
different job (another model or weights, inputs, targets, labels, box, options
or batch size) is refused, naming what differs. `collect` merges exactly the
parts that progress.json lists.

Multi-host: call `jax.distributed.initialize()` first (the CLI's
`--distributed`). Every process passes the same full host inputs; results are
gathered to every process and only process 0 writes and reads out_dir
(progress is broadcast from it), so the job runs wherever out_dir is; the
merged results that `run` returns are complete on the other processes only
when they can read out_dir too (a shared filesystem).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from advjax import adapt, attacks
from advjax.checks import check_finite, check_labels, prepare
from advjax.options import identity as options_identity

PROGRESS = "progress.json"
FIELDS = attacks.AttackResult._fields


class ResumeError(ValueError):
  """out_dir holds another job's results, or a corrupt progress or part file."""


def _digest(*arrays) -> str:
  """sha1 of arrays' shapes, dtypes and bytes (None counts as absent)."""
  h = hashlib.sha1()
  for a in arrays:
    if a is None:
      h.update(b"none")
      continue
    a = np.ascontiguousarray(a)
    h.update(str((a.shape, a.dtype)).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def job_identity(p, x, target, label, index, batch_size: int, untargeted: str,
                 key) -> dict[str, Any]:
  """What identifies a job, part by part (so a refusal can say what differs)."""
  return {"model": adapt.fingerprint(adapt.Wrapped(p.apply, p.params, p.kind),
                                     p.input_shape),
          "inputs": _digest(x), "targets": _digest(target),
          "labels": _digest(label), "index": _digest(index),
          "bounds": _digest(p.lo, p.hi), "options": options_identity(p.options),
          "untargeted": None if target is not None else untargeted,
          "key": None if key is None else _digest(_key_data(key)),
          "batch_size": batch_size, "n": int(len(x))}


def _key_data(key) -> np.ndarray:
  """The raw bits of a PRNG key, typed (jax.random.key) or not (PRNGKey)."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.asarray(key)


def _atomic_savez(path: str, **arrays) -> None:
  """np.savez via a temporary file and rename: a part is whole or absent."""
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def _atomic_json(path: str, obj: Any) -> None:
  """JSON via a temporary file and rename."""
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(path + ".tmp", path)


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
    raise ResumeError(f"{path} is corrupt or from an older advjax ({e}); delete "
                      "it (and the part files beside it) to start this job over.") from e


def _check_progress(out_dir: str, job: dict) -> set[int]:
  """Finished batch indices of an earlier run of the same job in out_dir."""
  prog = _read_progress(out_dir)
  if prog is None:
    return set()
  old = dict(prog["job"])
  if isinstance(old.get("options"), dict):  # recorded before a field existed
    old["options"] = options_identity(old["options"])
  diff = [k for k in job if old.get(k) != job[k]]
  if diff:
    raise ResumeError(f"{out_dir} holds results of a different job (it differs in: "
                      f"{', '.join(diff)}); use a new output folder or delete it.")
  return {i for i in prog["done"]
          if os.path.exists(os.path.join(out_dir, f"part-{i:05d}.npz"))}


def _pad(a: np.ndarray, n: int) -> np.ndarray:
  """Pads the leading axis to n rows by repeating the last row."""
  return a if len(a) == n else np.concatenate([a, np.repeat(a[-1:], n - len(a), 0)])


def _to_global(a: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array (the same on every process) as an array sharded over the mesh."""
  return jax.make_array_from_callback(a.shape, sharding, lambda i: a[i])


def _to_host(a: jax.Array) -> np.ndarray:
  """The full array on the host (gathered across processes when multi-host)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return np.asarray(a)


def _validate(model, x, target, label, index, bounds, options, batch_size, devices):
  """Checks the whole job on host arrays before anything is sharded."""
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size={batch_size!r}; it must be a positive integer.")
  batch_size = int(batch_size)  # np.int64 would not go into progress.json
  if batch_size % len(devices):
    raise ValueError(f"batch_size={batch_size} is not a multiple of the "
                     f"{len(devices)} devices; choose a multiple so batches shard evenly.")
  x = np.asarray(x, np.float32)
  if x.ndim < 2 or len(x) == 0:
    raise ValueError(f"x has shape {x.shape}; the driver needs a non-empty batch (N, ...).")
  p = prepare(model, x, bounds, options.check(), check_logits=False)
  n, K = len(x), p.num_classes
  target = None if target is None else np.asarray(check_labels(target, n, K, "target"))
  label = None if label is None else np.asarray(check_labels(label, n, K, "label"))
  index = np.arange(n) if index is None else np.asarray(index)
  if index.shape != (n,):
    raise ValueError(f"index has shape {index.shape}; it must be ({n},) like x.")
  return p, x, target, label, index, batch_size


def run(model: Any, x, target, out_dir: str, *, bounds=(0.0, 1.0),
        options: attacks.AttackOptions = attacks.AttackOptions(), label=None,
        index=None, batch_size: int = 128, devices=None,
        stop_after: int | None = None, progress: bool = True,
        untargeted: str = "all", key=None) -> dict[str, np.ndarray]:
  """Attacks x (N, ...) batch by batch, appending results to out_dir (§4.1).

  Args:
    model: any model of `attacks.lbfgs` (a pair (apply_fn, params) keeps the
      weights jit arguments).
    x: inputs (N, ...) inside the box (host array, the same on every process).
    target: (N,) int targets, or None for the untargeted modes.
    out_dir: where part-XXXXX.npz and progress.json go; reused to resume.
    bounds, options, untargeted, key: as `attacks.lbfgs` (a fresh key per
      batch is folded from `key`).
    label: (N,) true labels, saved (and used by untargeted attacks).
    index: (N,) dataset indices saved with the results (default arange(N)).
    batch_size: fixed batch; a multiple of the device count. 128 is fastest
      on 2 CPU cores (BUILD_NOTES.md §2); on a GPU use more.
    devices: devices of the 'batch' mesh axis (default all, every process).
    stop_after: stop after this many newly finished batches (to test resuming).
    progress: show a tqdm progress bar (process 0 only).

  Returns:
    The merged results of all finished batches (`collect(out_dir)`).

  Raises:
    ValueError: bad inputs (as `attacks.lbfgs`), a broken model (non-finite
      logits), or `ResumeError`: out_dir holds another job or corrupt files.
  """
  attacks.check_untargeted(untargeted, key)
  devices = list(jax.devices() if devices is None else devices)
  p, x, target, label, index, batch_size = _validate(
      model, x, target, label, index, bounds, options, batch_size, devices)
  job = job_identity(p, x, target, label, index, batch_size, untargeted, key)
  n, nb = len(x), -(-len(x) // batch_size)
  done = _agreed_progress(out_dir, job, nb)
  todo = [i for i in range(nb) if i not in done]
  sharding = NamedSharding(Mesh(np.array(devices), ("batch",)), P("batch"))
  writer = jax.process_index() == 0
  bar = _bar(nb, len(done), progress and writer)
  for k, i in enumerate(todo):
    if stop_after is not None and k >= stop_after:
      break
    sl = slice(i * batch_size, min(n, (i + 1) * batch_size))
    xb = _pad(x[sl], batch_size)
    check_finite(p, xb)  # a broken model never yields a "success"
    glob = lambda a: None if a is None else _to_global(_pad(a[sl], batch_size), sharding)
    res = attacks.solve_batch(p, glob(x), glob(target), label=glob(label),
                              untargeted=untargeted,
                              key=None if key is None else jax.random.fold_in(key, i))
    out = {f: _to_host(getattr(res, f))[:sl.stop - sl.start] for f in FIELDS}
    out["index"] = index[sl]
    if label is not None:
      out["label"] = label[sl]
    err = None
    if writer:
      try:
        _atomic_savez(os.path.join(out_dir, f"part-{i:05d}.npz"), **out)
        done.add(i)
        _atomic_json(os.path.join(out_dir, PROGRESS),
                     dict(job=job, num_batches=nb, done=sorted(done)))
      except OSError as e:
        err = e
    _agree_written(err, out_dir, i)
    bar.update(1)
  bar.close()
  _barrier("advjax.driver.run: parts written")
  return collect(out_dir)


def _agree_written(err: OSError | None, out_dir: str, i: int) -> None:
  """Raises on every process if process 0 could not write batch i, so that the
  others stop too instead of waiting in the next collective attack."""
  failed = err is not None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    failed = bool(np.asarray(multihost_utils.broadcast_one_to_all(np.int32(failed))))
  if err is not None:
    raise err
  if failed:
    raise OSError(f"process 0 could not write batch {i} to {out_dir}: see its error; "
                  "the finished batches are kept, rerun to resume.")


def _barrier(name: str) -> None:
  """Waits for every process (a no-op with one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def _agreed_progress(out_dir: str, job: dict, nb: int) -> set[int]:
  """Process 0 reads out_dir's progress; every process gets its verdict.

  Broadcasting it means every process runs the same batches (a mismatch would
  hang the collective attack) even where out_dir is not shared.
  """
  err, done = None, set()
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    try:
      done = _check_progress(out_dir, job)
    except ResumeError as e:
      err = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    mask = np.zeros(nb + 1, np.int32)
    mask[sorted(done)] = 1
    mask[nb] = err is not None
    mask = np.asarray(multihost_utils.broadcast_one_to_all(mask))
    done = set(np.flatnonzero(mask[:nb]).tolist())
    if mask[nb] and err is None:
      err = ResumeError(f"process 0 refused the job in {out_dir}: see its error.")
  if err is not None:
    raise err
  return done


def _bar(total: int, initial: int, enabled: bool):
  """A tqdm progress bar over batches (a no-op object when disabled)."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, initial=initial, unit="batch", disable=not enabled,
              desc="L-BFGS attack")


def collect(out_dir: str) -> dict[str, np.ndarray]:
  """Merges exactly the part files progress.json lists, in batch order."""
  prog = _read_progress(out_dir)
  if prog is None or not prog["done"]:
    return {}
  loaded = []
  for i in sorted(prog["done"]):
    path = os.path.join(out_dir, f"part-{i:05d}.npz")
    try:
      with np.load(path) as z:
        loaded.append({k: z[k] for k in z.files})
    except (OSError, ValueError, EOFError) as e:
      raise ResumeError(f"{path} is missing or corrupt ({e}); delete it and rerun "
                        "the same command to redo that batch.") from e
  return {k: np.concatenate([d[k] for d in loaded]) for k in loaded[0]}


def is_complete(out_dir: str) -> bool:
  """Whether every batch of the job in out_dir has finished."""
  prog = _read_progress(out_dir)
  return prog is not None and len(prog["done"]) == prog["num_batches"]


def save(path: str, results: dict[str, np.ndarray]) -> None:
  """Writes merged results to one .npz (x_adv, r, success, target, label, ...)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  _atomic_savez(path, **results)
