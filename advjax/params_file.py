"""The parameters file of a checkpoint folder, read and verified.

`params.msgpack` (flax serialization) beside `meta.json`, which records the
file's sha256: `read_meta` and `restore` check the metadata, the checksum (a
flipped bit in a float would otherwise load silently), every shape against
the model's and every value's finiteness. `advjax.checkpoint` (folders of any
model) and `advjax.models.pretrained` (the committed nets) both read through
here; it imports no other advjax module.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import numpy as np
from flax import serialization

PARAMS = "params.msgpack"
META = "meta.json"
REQUIRED = ("model", "num_params")  # what load needs from meta.json
CHECKSUMS = "sha256"  # meta.json key: {file name: hex sha256}


class CheckpointError(ValueError):
  """A checkpoint is missing, corrupt or belongs to another model."""


def sha256(data: bytes) -> str:
  """Hex sha256 of `data`, as recorded in meta.json."""
  return hashlib.sha256(data).hexdigest()


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


def restore(folder: str, template: Any, meta: dict[str, Any]) -> Any:
  """The parameters of `folder` (numpy arrays shaped like `template`): the
  file's sha256 checked against meta, every shape against the template's,
  every value finite."""
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
  return params
