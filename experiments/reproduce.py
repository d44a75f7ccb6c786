"""Runs every experiment in one process, in order; see configs/reproduce.py.

Each step writes its own results folder (experiments/results/<name>/, quick:
experiments/results/quick/<name>/); this script writes reproduce/ with each
step's status, wall seconds and peak RSS (the step's own peak where Linux lets
it be reset, else the process's so far).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import resource
import sys
import time

from experiments import common, tables
from experiments.configs import reproduce as config

markdown = tables.reproduce  # results.md


def _reset_peak() -> bool:
  """Resets the process's peak RSS (Linux ≥ 4.0), so each step gets its own."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _peak_rss_mib() -> int:
  """Peak resident memory since the last reset (VmHWM), else of the process
  so far (ru_maxrss, KiB on Linux)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) // 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def step_config(cfg: config.Config, conf_mod):
  """A step's own config at the chosen size, seeds, data and runs folder."""
  c = conf_mod.get_config(cfg.quick)
  return dataclasses.replace(c, seeds=tuple(range(cfg.n_seeds)), data_dir=cfg.data_dir,
                             runs_dir=cfg.runs_dir, progress=cfg.progress)


def run_step(name: str, cfg: config.Config) -> dict:
  """Runs one step unless complete; returns its status row."""
  mod = importlib.import_module(f"experiments.{name}")
  conf_mod = importlib.import_module(f"experiments.configs.{name}")
  c = step_config(cfg, conf_mod)
  workdir = (os.path.join(cfg.steps_dir, name) if cfg.steps_dir
             else common.default_workdir(conf_mod, c))
  if common.is_complete(workdir, c):
    return {"step": name, "status": "complete earlier (skipped)"}
  t0, per_step = time.time(), _reset_peak()
  common.execute(mod.run, conf_mod, c, workdir, markdown=mod.markdown)
  return {"step": name, "status": "ran", "wall_seconds": round(time.time() - t0, 1),
          "peak_rss_mib": _peak_rss_mib(), "peak_rss_of": "step" if per_step else "process"}


def run(cfg: config.Config, workdir: str) -> dict:
  """Every step of config.STEPS not in cfg.skip, in order."""
  unknown = set(cfg.skip) - set(config.STEPS)
  if unknown:
    raise ValueError(f"--config.skip {sorted(unknown)}: steps are {config.STEPS}.")
  t0, rows = time.time(), []
  def results():
    return {"steps": rows, "wall_seconds": round(time.time() - t0, 1),
            "separate": list(config.SEPARATE), "n_seeds": cfg.n_seeds}
  print("steps:", ", ".join(n for n in config.STEPS if n not in cfg.skip),
        "| separate, not run here:", "; ".join(config.SEPARATE), flush=True)
  for name in common.save_each(config.STEPS, workdir, cfg, config, markdown, results):
    if name in cfg.skip:
      rows.append({"step": name, "status": "skipped (--config.skip)"})
      continue
    print(f"\n=== {name} ===", flush=True)
    rows.append(run_step(name, cfg))
  return results()


def main(argv=None) -> dict:
  argv = list(sys.argv[1:] if argv is None else argv)
  if "--seeds" in argv:  # shorthand of --config.n_seeds=N
    i = argv.index("--seeds")
    if i + 1 >= len(argv) or not argv[i + 1].isdigit() or int(argv[i + 1]) < 1:
      raise SystemExit("--seeds needs a number of training seeds >= 1, e.g. --seeds 3")
    argv[i:i + 2] = [f"--config.n_seeds={argv[i + 1]}"]
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
