"""Checkpoints: a folder with `params.msgpack` (flax serialization) and `meta.json`.

`meta.json` names the model (so `load` rebuilds it), λ, data, seed, errors and the
code version. `load` checks every parameter's shape against the named model and
says what differs, so a checkpoint of another model is never silently used.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from typing import Any

import jax
import numpy as np
from flax import serialization

from advjax import __version__
from advjax import models

PARAMS = "params.msgpack"
META = "meta.json"
REQUIRED = ("model", "num_params")  # what load needs from meta.json


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


def atomic_write(path: str, data: bytes) -> None:
  """Writes via a temporary file and rename, so an interrupt never leaves half."""
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def save(folder: str, model: models.Model, params: Any,
         meta: dict[str, Any] | None = None, dropout: float = 0.0) -> None:
  """Writes params and metadata (model name, dropout, code version, ...)."""
  os.makedirs(folder, exist_ok=True)
  meta = dict(meta or {}, model=model.name, dropout=dropout,
              num_params=models.num_params(params), code_version=code_version())
  atomic_write(os.path.join(folder, PARAMS),
                serialization.to_bytes(jax.device_get(params)))
  atomic_write(os.path.join(folder, META),
                json.dumps(meta, indent=2, default=float).encode())


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
  return meta


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
