"""Config: Tables 3–4 — cross-training-set generalisation (§4.2).

Paper: Table 3 (FC100-100-10 and FC123-456-10 trained on P1, FC100-100-10' on
P2: errors on P1, P2, test and average minimum distortion) and Table 4 (the
error each model makes on the others' adversarial examples, made on test
images; the same perturbations amplified to per-pixel RMS 0.1; Gaussian noise
σ = 0.06 and 0.1 on test images every model classifies correctly). With
several seeds: mean ± sd over the seeds' models.

Command (full):  python -m experiments.table34    (after experiments.train_models)
Command (quick): python -m experiments.table34 --quick
Runtime: full ≈ 60 s per seed on 2 shared CPU cores (1,000 test images × 3
models); quick ≈ 10 s.
Expected (measured on 10k-image models): transfer 9–50% against noise
0.2–0.9%; amplified to RMS 0.1: 51–84% (paper: 22–98%).
"""

from __future__ import annotations

import dataclasses
from advjax.attack import AttackOptions


from experiments import common
from experiments.configs import PAPER_ATTACK, QUICK_ATTACK

TITLE = "Tables 3–4: cross-training-set generalisation (§4.2)"
MODELS = ("P1-FC100-100-10", "P1-FC123-456-10", "P2-FC100-100-10")
LABELS = {"P1-FC100-100-10": "FC100-100-10", "P1-FC123-456-10": "FC123-456-10",
          "P2-FC100-100-10": "FC100-100-10'"}

# Paper's Table 3: err P1, err P2, err test (%), min av. distortion.
PAPER3 = {"P1-FC100-100-10": (0, 2.4, 2, 0.062),
          "P1-FC123-456-10": (0, 2.5, 2.1, 0.059),
          "P2-FC100-100-10": (2.3, 0, 2.1, 0.058)}
_P4 = {
    "P1-FC100-100-10": [100, 26.2, 5.9], "P1-FC123-456-10": [6.25, 100, 5.1],
    "P2-FC100-100-10": [8.2, 8.2, 100], "Gaussian noise σ=0.06": [2.2, 2.6, 2.4],
    "P1-FC100-100-10 amplified": [100, 98, 43],
    "P1-FC123-456-10 amplified": [96, 100, 22],
    "P2-FC100-100-10 amplified": [27, 50, 100],
    "Gaussian noise σ=0.1": [2.6, 2.8, 2.7],
}
PAPER4 = {r: dict(zip(MODELS, v)) for r, v in _P4.items()}


@dataclasses.dataclass(frozen=True)
class Config(common.ExperimentConfig):
  """Models, test images per model, noise, amplification, attack options."""
  models: tuple[str, ...] = MODELS
  n_images: int = 1000
  seed: int = 0
  n_noise: int = 1000
  sigmas: tuple[float, ...] = (0.06, 0.1)
  amplify: float = 0.1
  batch_size: int = 250
  attack: AttackOptions = PAPER_ATTACK


def get_config(quick: bool = False) -> Config:
  """The paper's three models; quick: 24 images and a weaker attack."""
  if quick:
    return Config(**common.base(quick), n_train=600, n_test=500, n_images=24,
                  n_noise=100, batch_size=24,
                  attack=QUICK_ATTACK)
  return Config(**common.base(quick))
