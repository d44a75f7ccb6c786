"""Runs every experiment in order, reusing checkpoints, and prints the tables.

Command (full):  python experiments/reproduce.py        (≈ 40 min on 2 CPU cores)
Command (quick): python experiments/reproduce.py --quick   (tiny sizes, ≈ 3 min)
Each step writes experiments/results/<name>/ (quick: experiments/results/quick/);
finished work (checkpoints, adversarial sets) is reused, so a rerun after an
interrupt continues where it stopped. `--skip` leaves steps out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import (adv_training, figures, lipschitz_bounds, table1,  # noqa: E402
                         table2, table34, train_models, unit_analysis)

STEPS = ("train_models", "table1", "table2", "table34", "figures",
         "adv_training", "unit_analysis", "lipschitz_bounds")


def step_args(name: str, runs: str, quick: bool, data_dir: str | None) -> list[str]:
  """Command-line arguments of one step."""
  models_dir = os.path.join(runs, "models")
  args = {"train_models": ["--out", models_dir],
          "adv_training": ["--out", os.path.join(runs, "advtrain")],
          "table1": ["--models-dir", models_dir, "--runs", runs],
          "table2": ["--models-dir", models_dir, "--runs", runs],
          "table34": ["--models-dir", models_dir, "--runs", runs],
          "figures": ["--models-dir", models_dir],
          "unit_analysis": ["--models-dir", models_dir],
          "lipschitz_bounds": ["--models-dir", models_dir]}[name]
  if data_dir:
    args += ["--data-dir", data_dir]
  return args + (["--quick"] if quick else [])


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--runs", default=None, help="checkpoints and caches "
                 "(default runs/, quick: runs/quick/)")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--quick", action="store_true")
  p.add_argument("--skip", nargs="*", default=[], choices=STEPS)
  a = p.parse_args(argv)
  runs = a.runs or os.path.join("runs", "quick" if a.quick else "")
  mods = {"train_models": train_models, "table1": table1, "table2": table2,
          "table34": table34, "figures": figures, "adv_training": adv_training,
          "unit_analysis": unit_analysis, "lipschitz_bounds": lipschitz_bounds}
  times = {}
  for name in STEPS:
    if name in a.skip:
      continue
    print(f"\n=== {name} ===", flush=True)
    t0 = time.time()
    mods[name].main(step_args(name, runs, a.quick, a.data_dir))
    times[name] = round(time.time() - t0, 1)
    print(f"--- {name}: {times[name]} s", flush=True)
  print("\nwall seconds per step:", times, "total", round(sum(times.values()), 1))
  return times


if __name__ == "__main__":
  main()
