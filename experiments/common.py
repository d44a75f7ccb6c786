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


def logits_fn(model, params):
  """A jitted logits function of one model (pass the same object to reuse)."""
  import jax  # pylint: disable=import-outside-toplevel
  return jax.jit(lambda x: model.apply(params, x))


def adv_cache(runs: str, table: str, model: str, quick: bool) -> str:
  """The `advjax.driver` folder caching `model`'s adversarial set for `table`."""
  return os.path.join(runs, "adv", table + ("_quick" if quick else ""), model)


def results_dir(name: str, quick: bool) -> str:
  """experiments/results/<name>, or .../quick/<name> for the quick size."""
  return os.path.join("experiments", "results", *(("quick",) if quick else ()), name)


def parse(doc: str, name: str, config, argv, models: bool = True,
          runs: bool = False, out: str | None = None):
  """The shared command line of the experiment scripts.

  Returns (args, cfg, results folder) after writing config.json there.
  """
  import argparse  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(description=doc)
  if models:
    p.add_argument("--models-dir", default="runs/models", help="trained checkpoints")
  if runs:
    p.add_argument("--runs", default="runs", help="cache of adversarial sets")
  if out:
    p.add_argument("--out", default=out, help="checkpoints of this experiment")
  p.add_argument("--data-dir", default=None, help="IDX folder (or $ADVJAX_DATA_DIR)")
  p.add_argument("--results", default=None, help="results folder")
  p.add_argument("--quick", action="store_true", help="seconds-sized run")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  a = p.parse_args(argv)
  cfg = config.get_config(a.quick)
  res_dir = a.results or results_dir(name, a.quick)
  write_config(res_dir, cfg, argv)
  return a, cfg, res_dir
