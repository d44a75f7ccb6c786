"""Attack a whole dataset split at scale, resumably (the §4.2 experiments' engine).

`run` cuts the inputs into fixed-size batches (the last one padded, so the
attack is compiled once), shards each batch over devices along a 'batch' mesh
axis with `jax.sharding`, and writes every finished batch to
`out_dir/part-XXXXX.npz` plus `out_dir/progress.json`. Restarting with the same
inputs and options skips the finished batches; `collect` merges the parts.

Multi-host: call `jax.distributed.initialize()` first (the CLI's
`--distributed`); every process passes the same full inputs, the mesh spans all
processes' devices, results are gathered to every process and only process 0
writes files. Every process reads progress.json to resume, so out_dir must be
on a filesystem all hosts share (untested beyond one process; BUILD_NOTES.md).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from advjax import attacks

PROGRESS = "progress.json"
FIELDS = ("x_adv", "r", "success", "target", "c", "l2", "distortion",
          "iterations", "solves")


def _fingerprint(x, target, label, batch_size: int, options: dict) -> str:
  """Identifies a run so that resuming never mixes different jobs."""
  h = hashlib.sha1()
  for a in (x, target, label):
    if a is not None:
      a = np.ascontiguousarray(a)
      h.update(str((a.shape, a.dtype)).encode())
      h.update(a.tobytes())
  h.update(json.dumps([batch_size, options], sort_keys=True, default=str).encode())
  return h.hexdigest()


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


def _pad(a: np.ndarray, n: int) -> np.ndarray:
  """Pads the leading axis to n rows by repeating the last row."""
  return a if len(a) == n else np.concatenate([a, np.repeat(a[-1:], n - len(a), 0)])


def _to_global(a: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array (the same on every process) as an array sharded over the mesh."""
  return jax.make_array_from_callback(a.shape, sharding, lambda i: a[i])


def _to_host(a: jax.Array) -> np.ndarray:
  """The full array on the host (gathered across processes when multi-host)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return np.asarray(a)


def _check_progress(out_dir: str, fp: str, n: int, batch_size: int) -> set[int]:
  """Finished batch indices of an earlier run of the same job in out_dir."""
  path = os.path.join(out_dir, PROGRESS)
  if not os.path.exists(path):
    return set()
  with open(path) as f:
    prog = json.load(f)
  if prog.get("fingerprint") != fp:
    raise ValueError(f"{out_dir} holds results of a different run (other inputs, "
                     "targets, batch size or options); use a new out_dir or delete it.")
  return {i for i in prog["done"]
          if os.path.exists(os.path.join(out_dir, f"part-{i:05d}.npz"))}


def run(logits_fn: Callable[[jax.Array], jax.Array], x, target, out_dir: str, *,
        label=None, index=None, batch_size: int = 128, devices=None,
        stop_after: int | None = None, progress: bool = True,
        **attack_options) -> dict[str, np.ndarray]:
  """Attacks x (N, ...) batch by batch, appending results to out_dir (§4.1).

  Args:
    logits_fn: (B, ...) -> (B, K) logits; one object for the whole run.
    x: inputs (N, ...) in [0,1] (host array, the same on every process).
    target: (N,) int targets, or None for `attacks.lbfgs`'s untargeted modes.
    out_dir: where part-XXXXX.npz and progress.json go; reused to resume.
    label: (N,) true labels, saved (and used by untargeted attacks).
    index: (N,) dataset indices saved with the results (default arange(N)).
    batch_size: fixed batch; must be a multiple of the device count. 128 is
      fastest on 2 CPU cores (BUILD_NOTES.md §2): bigger batches wait longer on
      their slowest example; on a GPU use more.
    devices: devices of the 'batch' mesh axis (default all, every process).
    stop_after: stop after this many newly finished batches (to test resuming).
    progress: show a tqdm progress bar.
    **attack_options: passed to `attacks.lbfgs` (solver, bisect_steps, key, ...).

  Returns:
    The merged results of all finished batches (`collect(out_dir)`).
  """
  x = np.asarray(x, np.float32)
  n = len(x)
  index = np.arange(n) if index is None else np.asarray(index)
  devices = list(jax.devices() if devices is None else devices)
  if batch_size % len(devices):
    raise ValueError(f"batch_size={batch_size} is not a multiple of the "
                     f"{len(devices)} devices; choose a multiple so batches shard evenly.")
  if target is not None and np.shape(target) != (n,):
    raise ValueError(f"target has shape {np.shape(target)}; it must be ({n},) like x.")
  sharding = NamedSharding(Mesh(np.array(devices), ("batch",)), P("batch"))
  fp = _fingerprint(x, target, label, batch_size, attack_options)
  os.makedirs(out_dir, exist_ok=True)
  done = _check_progress(out_dir, fp, n, batch_size)
  todo = [i for i in range(-(-n // batch_size)) if i not in done]
  writer = jax.process_index() == 0
  bar = _bar(len(todo) + len(done), len(done), progress and writer)
  for k, i in enumerate(todo):
    if stop_after is not None and k >= stop_after:
      break
    sl = slice(i * batch_size, min(n, (i + 1) * batch_size))
    m = sl.stop - sl.start
    xs = _to_global(_pad(x[sl], batch_size), sharding)
    kw = dict(attack_options)
    if kw.get("key") is not None:  # a fresh key per batch, not the same targets
      kw["key"] = jax.random.fold_in(kw["key"], i)
    if label is not None and target is None:
      kw["label"] = _to_global(_pad(np.asarray(label[sl], np.int32), batch_size), sharding)
    ts = None if target is None else _to_global(
        _pad(np.asarray(target[sl], np.int32), batch_size), sharding)
    res = attacks.lbfgs(logits_fn, xs, ts, **kw)
    out = {f: _to_host(getattr(res, f))[:m] for f in FIELDS}
    out["index"] = index[sl]
    if label is not None:
      out["label"] = np.asarray(label[sl])
    if writer:
      _atomic_savez(os.path.join(out_dir, f"part-{i:05d}.npz"), **out)
      done.add(i)
      _atomic_json(os.path.join(out_dir, PROGRESS),
                   dict(fingerprint=fp, n=n, batch_size=batch_size,
                        num_batches=-(-n // batch_size), done=sorted(done)))
    bar.update(1)
  bar.close()
  return collect(out_dir)


def _bar(total: int, initial: int, enabled: bool):
  """A tqdm progress bar over batches (a no-op object when disabled)."""
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, unit="batch", disable=not enabled,
              desc="L-BFGS attack")


def collect(out_dir: str) -> dict[str, np.ndarray]:
  """Merges out_dir's finished part files, in batch order."""
  parts = sorted(glob.glob(os.path.join(out_dir, "part-*.npz")))
  if not parts:
    return {}
  loaded = [dict(np.load(p)) for p in parts]
  return {k: np.concatenate([d[k] for d in loaded]) for k in loaded[0]}


def is_complete(out_dir: str) -> bool:
  """Whether every batch of the run in out_dir has finished."""
  path = os.path.join(out_dir, PROGRESS)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    prog = json.load(f)
  return len(prog["done"]) == prog["num_batches"]


def save(path: str, results: dict[str, np.ndarray]) -> None:
  """Writes merged results to one .npz (x_adv, r, success, target, label, ...)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  _atomic_savez(path, **results)
