"""Checkpoints: a folder with `params.msgpack` (flax serialization) and `meta.json`.

`meta.json` names the model (so `load` rebuilds it), λ, data, seed, errors, the
code version and the sha256 of `params.msgpack`. `load` verifies the checksum (a
flipped bit in a float would otherwise load silently), then checks every
parameter's shape against the named model and says what differs, so a
checkpoint of another model is never silently used. Checkpoints written before
checksums existed load without the check.

`atomic_write` (and `atomic_json`) is the package's one way to write a file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import tempfile
from typing import Any

import jax
import numpy as np
from flax import serialization

from advjax import __version__
from advjax import models

PARAMS = "params.msgpack"
META = "meta.json"
REQUIRED = ("model", "num_params")  # what load needs from meta.json
CHECKSUMS = "sha256"  # meta.json key: {file name: hex sha256}


class CheckpointError(ValueError):
  """A checkpoint is missing, corrupt or belongs to another model."""


@functools.lru_cache(maxsize=None)
def code_version() -> str:
  """Package version plus the git commit (and '.dirty' for uncommitted code)."""
  def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True,
                          timeout=5, cwd=os.path.dirname(__file__)).stdout.strip()
  try:
    sha = git("rev-parse", "--short", "HEAD")
    # Uncommitted changes to the code make the commit alone a wrong provenance.
    changed = git("status", "--porcelain", "--", ":/advjax", ":/experiments").splitlines()
    dirty = bool(sha) and any(line.endswith(".py") for line in changed)
  except (OSError, subprocess.SubprocessError):
    sha, dirty = "", False
  return f"{__version__}+{sha}{'.dirty' if dirty else ''}" if sha else __version__


def _umask() -> int:
  """The process umask (read once, at import: setting it back is not atomic)."""
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


_UMASK = _umask()


def atomic_write(path: str, data: bytes) -> None:
  """Writes `data` to `path` so that readers see the old file or the new one,
  never half of it (an interrupt, a full disk, a crash).

  A uniquely named temporary file in the same folder (so concurrent writers do
  not share it, and the rename stays on one filesystem), flushed to disk, then
  `os.replace`d over `path`; removed if anything fails before the rename.
  """
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise TypeError(f"atomic_write({path!r}): data must be bytes, got "
                    f"{type(data).__name__}; encode text with .encode().")
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".",
                             suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      # mkstemp makes the file 0600: give it the mode open() would have.
      os.fchmod(f.fileno(), 0o666 & ~_UMASK)
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _json_default(x: Any) -> Any:
  """numpy/JAX scalars and arrays as Python numbers and lists, other numbers
  as floats, for json."""
  if hasattr(x, "tolist"):
    return x.tolist()
  return float(x)  # raises TypeError/ValueError for anything else


def atomic_json(path: str, obj: Any) -> None:
  """`obj` as indented JSON (numpy values as numbers), by `atomic_write`."""
  atomic_write(path, json.dumps(obj, indent=2, default=_json_default).encode())


def sha256(data: bytes) -> str:
  """Hex sha256 of `data`, as recorded in meta.json."""
  return hashlib.sha256(data).hexdigest()


def save(folder: str, model: models.Model, params: Any,
         meta: dict[str, Any] | None = None, dropout: float = 0.0) -> None:
  """Writes params and metadata (model name, dropout, code version, sha256 of
  the params file, ...); params first, so a folder with meta.json is whole."""
  os.makedirs(folder, exist_ok=True)
  blob = serialization.to_bytes(jax.device_get(params))
  # Set after the caller's meta, so a re-save of a loaded meta gets new values.
  meta = dict(meta or {}, model=model.name, dropout=dropout,
              num_params=models.num_params(params), code_version=code_version())
  meta[CHECKSUMS] = {PARAMS: sha256(blob)}
  atomic_write(os.path.join(folder, PARAMS), blob)
  atomic_json(os.path.join(folder, META), meta)


def read_meta(folder: str) -> dict[str, Any]:
  """The checkpoint's metadata."""
  path = os.path.join(folder, META)
  if not os.path.exists(path):
    raise CheckpointError(f"{path} not found: {folder!r} is not an advjax "
                          "checkpoint (train one with experiments/train_models.py).")
  try:
    with open(path) as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path} is corrupt ({e}).") from e
  missing = [k for k in REQUIRED if not isinstance(meta, dict) or k not in meta]
  if missing:
    raise CheckpointError(f"{path} lacks the keys {missing}: it was not written by "
                          "advjax.checkpoint.save; re-save the checkpoint.")
  sums = meta.get(CHECKSUMS, {})
  if not (isinstance(sums, dict) and all(isinstance(v, str) for v in sums.values())):
    raise CheckpointError(f"{path}: {CHECKSUMS!r} must map file names to hex "
                          "digests; the file was edited by hand: re-save the checkpoint.")
  return meta


def _verify(path: str, raw: bytes, meta: dict[str, Any]) -> None:
  """Raises unless `raw` (the bytes of `path`) has the sha256 in meta.json.
  Checkpoints from before checksums have none to verify."""
  want = meta.get(CHECKSUMS, {}).get(os.path.basename(path))
  if want is not None and sha256(raw) != want:
    raise CheckpointError(
        f"{path}: sha256 {sha256(raw)[:12]}… differs from {want[:12]}… in "
        f"{META}: the file is damaged or not the one saved with it; re-copy the "
        "checkpoint or retrain it.")


def _check_shapes(template: Any, params: Any, where: str) -> None:
  """Raises naming the first parameter whose shape differs from the model's."""
  want = {jax.tree_util.keystr(k): np.shape(v)
          for k, v in jax.tree_util.tree_leaves_with_path(template)}
  got = {jax.tree_util.keystr(k): np.shape(v)
         for k, v in jax.tree_util.tree_leaves_with_path(params)}
  for k in sorted(set(want) | set(got)):
    if want.get(k) != got.get(k):
      raise CheckpointError(f"{where}: parameter {k} has shape {got.get(k)} but "
                            f"the model expects {want.get(k)}; wrong checkpoint "
                            "for this model.")


def load(folder: str, model: models.Model | None = None
         ) -> tuple[models.Model, Any, dict[str, Any]]:
  """Loads (model, params, meta); `model` defaults to the one named in meta.

  Raises:
    CheckpointError: missing or corrupt files, or parameters of another model.
  """
  meta = read_meta(folder)
  model = model or models.get_model(meta["model"], dropout=meta.get("dropout", 0.))
  template = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  path = os.path.join(folder, PARAMS)
  if not os.path.exists(path):
    raise CheckpointError(f"{path} not found; the checkpoint is incomplete.")
  with open(path, "rb") as f:
    raw = f.read()
  _verify(path, raw, meta)
  try:
    tree = serialization.msgpack_restore(raw)
  except Exception as e:  # msgpack raises several types for corrupt bytes.
    raise CheckpointError(f"{path} is corrupt ({e}); retrain or re-copy it.") from e
  _check_shapes(template, tree, path)
  params = jax.tree_util.tree_map(np.asarray, serialization.from_state_dict(template, tree))
  for k, v in jax.tree_util.tree_leaves_with_path(params):
    if not np.all(np.isfinite(v)):
      raise CheckpointError(f"{path}: parameter {jax.tree_util.keystr(k)} holds "
                            f"{int((~np.isfinite(v)).sum())} NaN/inf values; the "
                            "training diverged or the file is damaged: retrain it.")
  return model, params, meta


def mismatch(meta: dict[str, Any], want: dict[str, Any]) -> dict[str, tuple]:
  """{key: (recorded, wanted)} for every key of `want` (as JSON reads it back)
  whose value recorded in a checkpoint's meta differs; nested dicts by their
  differing fields ('config.lr')."""
  want = json.loads(json.dumps(want, default=_json_default))

  def diff(got: dict, want: dict, prefix: str) -> dict:
    out = {}
    for k, v in want.items():
      g = got.get(k)
      if isinstance(v, dict) and isinstance(g, dict):
        out.update(diff(g, v, f"{prefix}{k}."))
      elif g != v:
        out[prefix + k] = (g, v)
    return out
  return diff(meta, want, "")


def check_matches(folder: str, meta: dict[str, Any], want: dict[str, Any],
                  what: str = "a model") -> None:
  """Refuses a finished checkpoint trained with other settings than `want`
  (CheckpointError naming each field as (checkpoint, now)): a renamed or
  retuned run must not reuse an old net."""
  diff = mismatch(meta, want)
  if diff:
    raise CheckpointError(f"{folder} holds {what} trained with another config (field: "
                          f"(checkpoint, now)): {diff}; use another runs folder "
                          "(--config.runs_dir) or delete it.")
