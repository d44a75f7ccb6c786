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

import dataclasses
import functools
import json
import os
import subprocess
import tempfile
from typing import Any

import jax
from flax import serialization

from advjax import __version__
from advjax import models, params_file
from advjax.params_file import CHECKSUMS, META, PARAMS, CheckpointError, read_meta, sha256

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


def load(folder: str, model: models.Model | None = None
         ) -> tuple[models.Model, Any, dict[str, Any]]:
  """Loads (model, params, meta); `model` defaults to the one named in meta.

  Raises:
    CheckpointError: missing or corrupt files, or parameters of another model.
  """
  meta = read_meta(folder)
  model = model or models.get_model(meta["model"], dropout=meta.get("dropout", 0.))
  params = params_file.restore(folder, jax.eval_shape(model.init, jax.random.PRNGKey(0)), meta)
  return model, params, meta


def mismatch(meta: dict[str, Any], want: dict[str, Any],
             defaults: dict[str, Any] | None = None) -> dict[str, tuple]:
  """{key: (recorded, wanted)} for every key of `want` (as JSON reads it back)
  whose value recorded in a checkpoint's meta differs; nested dicts by their
  differing fields ('config.lr'). A key the checkpoint lacks counts as its
  value in `defaults` (shaped like `want`) where that has it: a field added to
  a config later, at the default that keeps the old behaviour, does not refuse
  the nets trained before it."""
  normal = lambda d: json.loads(json.dumps(d, default=_json_default))
  want, defaults = normal(want), normal(defaults or {})

  def diff(got: dict, want: dict, known: dict, prefix: str) -> dict:
    out = {}
    for k, v in want.items():
      g = got.get(k, known.get(k) if isinstance(known, dict) else None)
      sub = known.get(k, {}) if isinstance(known, dict) else {}
      if isinstance(v, dict) and isinstance(g, dict):
        out.update(diff(g, v, sub, f"{prefix}{k}."))
      elif g != v:
        out[prefix + k] = (got.get(k), v)
    return out
  return diff(meta, want, defaults, "")


def _is_record(x: Any) -> bool:
  """A dataclass instance or a NamedTuple."""
  return ((dataclasses.is_dataclass(x) and not isinstance(x, type))
          or (isinstance(x, tuple) and hasattr(x, "_fields")))


def defaults_of(x: Any) -> Any:
  """The `defaults` argument of `check_matches` for a config value: each field of
  a dataclass or NamedTuple at its default (a nested record by its own fields'
  defaults), dicts key by key; None where nothing has a default."""
  if isinstance(x, dict):
    return {k: defaults_of(v) for k, v in x.items()}
  if not _is_record(x):
    return None
  if isinstance(x, tuple):
    given = x._field_defaults
  else:
    given = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
             for f in dataclasses.fields(x)
             if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
  out = {}
  for k in (x._fields if isinstance(x, tuple) else [f.name for f in dataclasses.fields(x)]):
    v, d = getattr(x, k), given.get(k)
    out[k] = defaults_of(v) if _is_record(v) else defaults_of(d) if _is_record(d) else d
  return out


def check_matches(folder: str, meta: dict[str, Any], want: dict[str, Any],
                  what: str = "a model", defaults: dict[str, Any] | None = None) -> None:
  """Refuses a finished checkpoint trained with other settings than `want`
  (CheckpointError naming each field as (checkpoint, now)): a renamed or
  retuned run must not reuse an old net. `defaults`: see `mismatch`."""
  diff = mismatch(meta, want, defaults)
  if diff:
    raise CheckpointError(f"{folder} holds {what} trained with another config (field: "
                          f"(checkpoint, now)): {diff}; use another runs folder "
                          "(--config.runs_dir) or delete it.")
