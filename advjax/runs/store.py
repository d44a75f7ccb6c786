"""The driver's files: one writer per folder (a lock), parts that name their slot
and job. Writes go through `checkpoint.atomic_write`, the package's one atomic
write."""

from __future__ import annotations

import io
import json
import zipfile
import os
import socket
import time

import numpy as np

from advjax.checkpoint import atomic_json, atomic_write  # noqa: F401  (re-exported)

LOCK = ".lock"
PART = "part-{:05d}.npz"
_META = ("_slot", "_job")  # written into every part, checked by `read_part`


class ResumeError(ValueError):
  """out_dir holds another job's results, or a corrupt, foreign or busy file."""


def write_part(out_dir: str, i: int, job: str, arrays: dict) -> None:
  """Part i of job `job` (its fingerprint), whole or absent."""
  buf = io.BytesIO()
  np.savez(buf, _slot=np.int64(i), _job=np.array(job), **arrays)
  atomic_write(os.path.join(out_dir, PART.format(i)), buf.getvalue())


def read_part(out_dir: str, i: int, job: str) -> dict:
  """Part i's arrays; ResumeError naming the file if it is corrupt, in another
  slot or of another job (a part copied or written by another run)."""
  path = os.path.join(out_dir, PART.format(i))
  try:
    with np.load(path) as z:
      d = {k: z[k] for k in z.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    raise ResumeError(f"{path} is missing or corrupt ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); delete it and rerun "
                      "the same command to redo that batch.") from e
  slot, owner = d.pop("_slot", None), d.pop("_job", None)  # absent: an older advjax
  if slot is not None and int(slot) != i:
    raise ResumeError(f"{path} holds batch {int(slot)}, not batch {i} (a part moved or "
                      "copied from elsewhere); delete it and rerun to redo that batch.")
  if owner is not None and str(owner) != job:
    raise ResumeError(f"{path} was written by another job than {out_dir}'s progress.json "
                      "records; delete the folder (or that part) and rerun.")
  return d


class Lock:
  """One writer per output folder: `out_dir/.lock` holds the owner's pid and host.

  A second run into a busy folder is refused at once; a lock whose process is
  gone (same host) is stale and taken over. Released on exit of the `with`.
  """

  def __init__(self, out_dir: str, enabled: bool = True):
    self.path, self.enabled, self.held = os.path.join(out_dir, LOCK), enabled, False

  def __enter__(self):
    if not self.enabled:
      return self
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        if not self._stale():
          raise ResumeError(self._busy()) from None
        _remove(self.path)
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self.held = True
      return self
    raise ResumeError(self._busy())

  def _owner(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def _stale(self) -> bool:
    """The owner ran on this host and its process is gone (or the lock is empty)."""
    o = self._owner()
    if not o:
      return time.time() - _mtime(self.path) > 10  # a lock being written: wait
    if o.get("host") != socket.gethostname():
      return False
    try:
      os.kill(int(o["pid"]), 0)
    except ProcessLookupError:
      return True
    except (PermissionError, ValueError, KeyError, TypeError):
      return False
    return False

  def _busy(self) -> str:
    o = self._owner()
    return (f"{os.path.dirname(self.path)} is in use by another run (pid {o.get('pid')} "
            f"on {o.get('host')}); wait for it, use another output folder, or delete "
            f"{self.path} if no such run is alive.")

  def __exit__(self, *exc):
    if self.held:
      _remove(self.path)
      self.held = False
    return False


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def _mtime(path: str) -> float:
  try:
    return os.path.getmtime(path)
  except OSError:
    return 0.0
