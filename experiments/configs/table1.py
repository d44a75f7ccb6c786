"""Config: Table 1 — errors and average minimum distortion per model (§4.2).

Paper: Table 1 of Szegedy et al. Adversarial examples are made on training
images (as the paper), each towards a random wrong label, on the images the
model classifies correctly (advjax.protocol); the distortion is the paper's
per-pixel RMS averaged over successful examples. With several seeds every
number is a mean ± sd over the seeds' models (per-seed values in results.json).

Command (full):  python -m experiments.table1     (after experiments.train_models)
Command (quick): python -m experiments.table1 --quick
Runtime: full ≈ 100 s per seed on 2 shared CPU cores (1,000 images × 6
models, measured on the 10k models); quick ≈ 15 s.
Expected (measured on 10k-image models): 100% success; distortion FC10(1e-4)
0.069, FC10(1e-2) 0.092, FC10(1) 0.136, FC100-100-10 0.066, FC200-200-10
0.070, AE400-10 0.095 (paper: 0.062, 0.1, 0.14, 0.058, 0.065, 0.086).
"""

from __future__ import annotations

import dataclasses
from advjax.attack import AttackOptions


from experiments import common
from experiments.configs import PAPER_ATTACK, QUICK_ATTACK

TITLE = "Table 1: errors and average minimum distortion (§4.2)"
MODELS = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10",
          "FC200-200-10", "AE400-10")

# Paper's Table 1: train error %, test error %, av. min distortion.
PAPER = {
    "FC10(1e-4)": (6.7, 7.4, 0.062), "FC10(1e-2)": (10.0, 9.4, 0.1),
    "FC10(1)": (21.2, 20.0, 0.14), "FC100-100-10": (0.0, 1.64, 0.058),
    "FC200-200-10": (0.0, 1.54, 0.065), "AE400-10": (0.57, 1.9, 0.086),
}


@dataclasses.dataclass(frozen=True)
class Config(common.ExperimentConfig):
  """Models, images per model, the protocol's seed, attack options."""
  models: tuple[str, ...] = MODELS
  n_images: int = 1000
  seed: int = 0  # the protocol's permutation and targets (not a training seed)
  batch_size: int = 250
  attack: AttackOptions = PAPER_ATTACK


def get_config(quick: bool = False) -> Config:
  """The paper's six models; quick: 24 images and a weaker attack."""
  if quick:
    return Config(**common.base(quick), n_train=600, n_test=500, n_images=24,
                  batch_size=24, attack=QUICK_ATTACK)
  return Config(**common.base(quick))
