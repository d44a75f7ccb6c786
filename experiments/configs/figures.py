"""Config: the figures of §4.2 (the paper's Figures 5 and 7, and noise digits).

Paper: Figure 5/7 — original, perturbation magnified ×10, adversarial image;
MNIST adversarial examples beside Gaussian-noise digits of the same distortion
(the noisy ones are still mostly classified right). Uses the models of the
first seed.

Command (full):  python -m experiments.figures     (after experiments.train_models)
Command (quick): python -m experiments.figures --quick
Runtime: ≈ 230 s measured on 2 shared CPU cores (the conv net's 64 attacks
dominate); quick ≈ 10 s.
Expected: perturbations invisible at ×1, structured at ×10; noise digits at the
same RMS keep their labels (error a few %, measured on `n_noise` images).
"""

from __future__ import annotations

import dataclasses

from advjax.attack import AttackOptions
from experiments import common
from experiments.configs import PAPER_ATTACK, QUICK_ATTACK

TITLE = "Figures: adversarial examples vs noise of equal distortion (§4.2)"
MODELS = ("FC10(1e-2)", "FC100-100-10", "FC200-200-10", "AE400-10", "conv")


@dataclasses.dataclass(frozen=True)
class Config(common.ExperimentConfig):
  """Models, examples shown per model, noise-matched images, attack options."""
  models: tuple[str, ...] = MODELS
  per_model: int = 4
  seed: int = 0
  n_noise: int = 500
  # conv-net attacks run ~40 img/s on this CPU (BUILD_NOTES.md): fewer images
  n_noise_conv: int = 64
  attack: AttackOptions = PAPER_ATTACK


def get_config(quick: bool = False) -> Config:
  """Five models; quick: two FC models (the conv net costs minutes on XLA:CPU)."""
  if quick:
    return Config(**common.base(quick), n_train=600, n_test=500, models=MODELS[:2],
                  per_model=2, n_noise=20,
                  attack=QUICK_ATTACK)
  return Config(**common.base(quick))
