"""Config: Table 2 — cross-model generalisation of adversarial examples (§4.2).

Paper: Table 2. Each row's adversarial examples (Table 1's sets, made on
training images for the row model) are fed to every column model; a cell is the
share the column model misclassifies (prediction ≠ true label). Diagonal cells
are 100% by construction for successful examples. Gaussian-noise rows add
σ·N(0, I) to training images that every column model classifies correctly,
clipped to [0,1]; their distortion column is the measured RMS after clipping.
With several seeds, each seed's models form one matrix; cells are mean ± sd.

Command (full):  python -m experiments.table2     (after experiments.table1: reuses its sets)
Command (quick): python -m experiments.table2 --quick
Runtime: full ≈ 10 s per seed once Table 1's sets exist; quick ≈ 5 s.
Expected (measured on 10k-image models): off-diagonal 0.5–84% against 0–1%
for noise σ = 0.1 (RMS 0.073); the paper's cells are in PAPER.
"""

from __future__ import annotations

import dataclasses

from experiments.configs import table1

TITLE = "Table 2: cross-model generalisation (§4.2)"
MODELS = table1.MODELS
SIGMAS = (0.1, 0.3)

PAPER = {
    "FC10(1e-4)": [100, 11.7, 22.7, 2, 3.9, 2.7],
    "FC10(1e-2)": [87.1, 100, 35.2, 35.9, 27.3, 9.8],
    "FC10(1)": [71.9, 76.2, 100, 48.1, 47, 34.4],
    "FC100-100-10": [28.9, 13.7, 21.1, 100, 6.6, 2],
    "FC200-200-10": [38.2, 14, 23.8, 20.3, 100, 2.7],
    "AE400-10": [23.4, 16, 24.8, 9.4, 6.6, 100],
    "Gaussian noise σ=0.1": [5.0, 10.1, 18.3, 0, 0, 0.8],
    "Gaussian noise σ=0.3": [15.6, 11.3, 22.7, 5, 4.3, 3.1],
}
PAPER = {r: dict(zip(MODELS, v)) for r, v in PAPER.items()}


@dataclasses.dataclass(frozen=True)
class Config(table1.Config):
  """Table 1's config (its adversarial sets are reused) plus the noise rows."""
  sigmas: tuple[float, ...] = SIGMAS
  n_noise: int = 1000


def get_config(quick: bool = False) -> Config:
  """Table 1's sizes plus the noise levels and noise-image count."""
  t1 = table1.get_config(quick)
  fields = {f.name: getattr(t1, f.name) for f in dataclasses.fields(t1)}
  return Config(**fields, n_noise=100 if quick else 1000)
