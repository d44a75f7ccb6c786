"""Shared plumbing of the experiment scripts: config.json, results.json, results.md."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
from typing import Any

import numpy as np

from advjax import checkpoint


def _plain(x: Any) -> Any:
  """Makes configs and results JSON-ready (dataclasses, numpy, tuples)."""
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    return {k: _plain(v) for k, v in dataclasses.asdict(x).items()}
  if isinstance(x, dict):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return x


def command(argv: list[str] | None) -> str:
  """The command line that reproduces this run."""
  script = os.path.relpath(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
  return " ".join(["python", script] + list(argv if argv is not None else sys.argv[1:]))


def dump_json(path: str, obj: Any) -> None:
  """Writes JSON atomically (an interrupt never leaves a half-written file)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  checkpoint.atomic_write(path, json.dumps(_plain(obj), indent=2).encode())


def write_config(folder: str, cfg: Any, argv: list[str] | None) -> None:
  """config.json: the config, the command and the code version."""
  dump_json(os.path.join(folder, "config.json"),
            {"config": cfg, "command": command(argv),
             "code_version": checkpoint.code_version()})


def write_results(folder: str, results: dict, markdown: str, title: str,
                  argv: list[str] | None = None) -> None:
  """results.json (every cell, command, code version) and results.md."""
  stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  dump_json(os.path.join(folder, "results.json"),
            dict(results, command=command(argv), date=stamp,
                 code_version=checkpoint.code_version()))
  checkpoint.atomic_write(os.path.join(folder, "results.md"),
                          f"# {title}\n\n{markdown}".encode())


def add_repo_to_path() -> None:
  """Lets `python experiments/x.py` import the `experiments` package."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if root not in sys.path:
    sys.path.insert(0, root)


def logits_fn(model, params):
  """A jitted logits function of one model (pass the same object to reuse)."""
  import jax  # pylint: disable=import-outside-toplevel
  return jax.jit(lambda x: model.apply(params, x))


def attack_images(fn, x, target, cache: str | None, batch_size: int = 256,
                  progress: bool = True, **options) -> dict[str, np.ndarray]:
  """Attacks `x` towards `target` in fixed-size batches, saving after each batch.

  A rerun with the same `cache` (.npz) skips the batches already done, so an
  interrupted run resumes. Returns x_adv, r, success, target, distortion, l2, c.
  """
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  from advjax import attacks  # pylint: disable=import-outside-toplevel
  keys = ("x_adv", "r", "success", "target", "distortion", "l2", "c")
  done = dict(np.load(cache)) if cache and os.path.exists(cache) else {}
  start = len(done.get("success", ()))
  parts = {k: [done[k]] if k in done else [] for k in keys}
  n, bs = len(x), min(batch_size, len(x))
  for i in tqdm(range(start, n, bs), disable=not progress, desc="attack",
                initial=start // bs, total=-(-n // bs)):
    xb, tb = x[i:i + bs], target[i:i + bs]
    pad = bs - len(xb)  # the last batch is padded so the attack compiles once
    if pad:
      xb = np.concatenate([xb, np.repeat(xb[:1], pad, 0)])
      tb = np.concatenate([tb, np.repeat(tb[:1], pad, 0)])
    res = attacks.lbfgs(fn, xb, tb, **options)
    for k in keys:
      parts[k].append(np.asarray(getattr(res, k))[: bs - pad])
    if cache:
      os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
      tmp = cache + ".tmp.npz"
      np.savez(tmp, **{k: np.concatenate(v) for k, v in parts.items()})
      os.replace(tmp, cache)
  return {k: np.concatenate(v) for k, v in parts.items()}


def results_dir(name: str, quick: bool) -> str:
  """experiments/results/<name>, or .../quick/<name> for the quick size."""
  return os.path.join("experiments", "results", *(("quick",) if quick else ()), name)
