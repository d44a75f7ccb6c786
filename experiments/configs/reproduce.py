"""Config: the whole reproduction in one process (every table and figure).

Runs, in order: train_models, table1, table2, table34, figures, adv_training,
unit_analysis, lipschitz_bounds, certify, each with its own config at the chosen size
and `n_seeds` training seeds (0, 1, ...). Steps whose results are complete for
the same config are skipped, so a rerun after an interrupt continues; models,
adversarial sets and training epochs are resumed inside each step. Not run
here (separate scripts): experiments/bench_attack.py (the attack benchmark)
and experiments/adv_search.py (the resumable adversarial-training search).

Command (full):  python -m experiments.reproduce            (one seed)
                 python -m experiments.reproduce --seeds 3  (the seed spread)
Command (quick): python -m experiments.reproduce --quick    (≈ 2 min, tiny sizes)
Runtime: quick measured in BUILD_NOTES.md "Issue 10"; full at 60k is the
sum of the steps' docstrings (hours on 2 CPU cores, mostly training).
"""

from __future__ import annotations

import dataclasses

from experiments import common

TITLE = "Reproduction: every step, wall time and peak memory"
STEPS = ("train_models", "table1", "table2", "table34", "figures",
         "adv_training", "unit_analysis", "lipschitz_bounds", "certify")
SEPARATE = ("python -m experiments.bench_attack (attack benchmark)",
            "python -m experiments.adv_search (adversarial-training search)",
            "python -m experiments.lipschitz_training (the regulariser's sweep)")


@dataclasses.dataclass(frozen=True)
class Config(common.ExperimentConfig):
  """Training seeds per step, steps to leave out, the steps' results folder."""
  n_seeds: int = 1
  skip: tuple[str, ...] = ()
  # Where the steps write (None: each step's own folder, experiments/results/
  # <step>/). Set it, with a fresh runs_dir, to time a full run from scratch
  # without touching the committed results:
  #   python -m experiments.reproduce --config.runs_dir=runs/full \
  #     --config.steps_dir=runs/full/results
  steps_dir: str | None = None


def get_config(quick: bool = False) -> Config:
  return Config(**common.base(quick))
