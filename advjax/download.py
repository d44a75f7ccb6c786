"""Resumable downloads checked by the SHA-256 of their content (urllib only).

`fetch` writes a URL's body to ``<dest>.<url digest>.part``, resuming that file
with an HTTP Range request after an interruption, checks the SHA-256 of the
decoded content (for MNIST: the decompressed IDX bytes, which are the same in
every faithful copy, while the gzip wrapping is not), and only then renames it
to ``dest``: a file at ``dest`` is always a verified one. A part is tied to its
URL because two mirrors' .gz files may differ byte for byte.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
import zlib
from typing import Callable, Iterable, Iterator

CHUNK = 1 << 16
TIMEOUT_S = 30.0
_HASH_ERRORS = (OSError, EOFError, zlib.error)


class DownloadError(OSError):
  """No URL gave a verified copy; `corrupt` when some copy failed its checksum."""

  def __init__(self, message: str, corrupt: bool = False):
    super().__init__(message)
    self.corrupt = corrupt


class ChecksumError(ValueError):
  """A downloaded file's content has another SHA-256 than the published one."""


def part_path(dest: str, url: str) -> str:
  """The partial file of `dest` downloaded from `url`."""
  return f"{dest}.{hashlib.sha256(url.encode()).hexdigest()[:12]}.part"


def gunzip_chunks(path: str) -> Iterator[bytes]:
  """The decompressed bytes of a gzip file, in chunks."""
  with gzip.open(path, "rb") as f:
    while chunk := f.read(CHUNK):
      yield chunk


def content_sha256(path: str,
                   decode: Callable[[str], Iterable[bytes]] = gunzip_chunks) -> str:
  """SHA-256 of `decode(path)` (by default: the file decompressed)."""
  h = hashlib.sha256()
  for chunk in decode(path):
    h.update(chunk)
  return h.hexdigest()


def _range_start(resp, start: int) -> int:
  """Where the body of `resp` starts in the file: `start` if it honoured the range."""
  if not start or resp.status != 206:
    return 0
  m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
  return start if m and int(m.group(1)) == start else 0


def _transfer(url: str, part: str, desc: str, progress: bool) -> None:
  """Appends the rest of `url` to `part` (from its current size) with a progress bar."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  start = os.path.getsize(part) if os.path.exists(part) else 0
  req = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
  try:
    resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)  # pylint: disable=consider-using-with
  except urllib.error.HTTPError as e:
    if e.code == 416 and start:  # nothing after `start`: the part is whole
      return
    raise
  with resp:
    start = _range_start(resp, start)  # a server that ignores Range: from 0
    length = resp.headers.get("Content-Length")
    total = start + int(length) if length is not None else None
    got = start
    with open(part, "ab" if start else "wb") as f, tqdm(
        total=total, initial=start, unit="B", unit_scale=True, desc=desc,
        disable=not progress, leave=False) as bar:
      while chunk := resp.read(CHUNK):
        f.write(chunk)
        got += len(chunk)
        bar.update(len(chunk))
  if total is not None and got < total:
    raise OSError(f"connection closed after {got} of {total} bytes "
                  "(the part is kept and resumed next time)")


def _check(part: str, name: str, url: str, sha256: str,
           decode: Callable[[str], Iterable[bytes]]) -> None:
  """Raises ChecksumError (and deletes `part`) unless its content has `sha256`."""
  try:
    got = content_sha256(part, decode)
  except _HASH_ERRORS as e:
    got = f"unreadable ({type(e).__name__}: {e})"
  if got != sha256:
    os.remove(part)
    raise ChecksumError(f"{name} from {url}: content SHA-256 {got}, expected "
                        f"{sha256}; the copy was deleted")


def fetch(urls: Iterable[str], dest: str, sha256: str, *, progress: bool = True,
          decode: Callable[[str], Iterable[bytes]] = gunzip_chunks) -> str:
  """Downloads `dest` from the first of `urls` whose content has `sha256`.

  A cut transfer leaves its part to be resumed by the next call; a copy with
  the wrong content is deleted (and, when it had been resumed, fetched once
  more from the start before the next URL is tried). Returns the URL used.
  Raises DownloadError, one line naming every URL's failure.
  """
  name, errors, corrupt = os.path.basename(dest), [], False
  for url in urls:
    for _ in range(2):
      part = part_path(dest, url)
      resumed = os.path.exists(part)
      try:
        _transfer(url, part, name, progress)
        _check(part, name, url, sha256, decode)
      except ChecksumError as e:
        errors.append(str(e))
        corrupt = True
        if resumed:
          continue  # the old part may be what was wrong: once more from 0
        break
      except (OSError, http.client.HTTPException, ValueError) as e:
        errors.append(f"{url}: {e}")
        break
      os.replace(part, dest)
      for stale in glob.glob(glob.escape(dest) + ".*.part"):  # other URLs' parts
        os.remove(stale)
      return url
  raise DownloadError("; ".join(errors) or "no URL given", corrupt)
