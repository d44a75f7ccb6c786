"""Config: the bracket of each example's minimal adversarial distortion (§4.1 + §4.3).

Paper: none (the paper gives per-layer upper Lipschitz bounds, Table 5, and the
attack's distortions, Table 1, but no per-example lower bound). For the paper's
MNIST nets (seed-0 checkpoints of experiments.train_models, 60k images) and
the first `n_images` test images: the certified L2 radius ρ(x) of every method
(advjax.certify: 'lipschitz', 'ibp', 'crown', 'exact' for the affine FC10 nets)
and the untargeted attack's distortion d(x) (advjax.attack.lbfgs, default
options, over every label), so that ρ(x) ≤ d*(x) ≤ d(x). Reported: mean and
median radius (L2 and the paper's RMS), the attack's mean distortion, the
median per-example ratio ρ/d, certified accuracy (correct and ρ ≥ ε) against
the attack's accuracy (correct and d > ε, an upper bound on the robust one)
at L2 ε ∈ {0.5, 1.0, 1.58, 2.0}, images/s of each certificate; a figure per
model (accuracy against ε, certified below, attacked above). Every radius is
checked against the attack's distance (a violation stops the run).

Command (full):  python -m experiments.certify   (after experiments.train_models)
Command (quick): python -m experiments.certify --quick   (random-init nets, 16 images)
Runtime: measured in BUILD_NOTES.md ("Certified radii"); the conv net's CROWN
dominates.
Expected: see BUILD_NOTES.md ("Certified radii"): the exact radius meets the
attack on the FC10 nets (ρ/d ≈ 1); CROWN well above the global Lipschitz bound
on the sigmoid nets; no radius above the attack's distance.
"""

from __future__ import annotations

import dataclasses

from advjax.attack import AttackOptions
from advjax.certify import CertifyOptions
from experiments import common
from experiments.configs import QUICK_ATTACK

TITLE = "Certified radii beside the attack: the bracket of the minimal distortion"

MODELS = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10",
          "AE400-10", "conv")
AFFINE = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)")
# CERTIFY.md's yardstick: plain CROWN (box ignored) on a 784-300-100-10 ReLU MLP
# certified a median 0.41 of the smallest adversarial distance nine attacks found.
YARDSTICK = "ReLU-784-300-100-10"
YARDSTICK_METHODS = ("ibp", "crown-nobox", "crown", "alpha-crown")
# The paper's conv net's CROWN through its convolutions (issue 28): its conv layers
# in patches, fc1 (256 rows × 25,088 below it: ~51 MB per example) by the dense pass.
CONV_PATCHES = CertifyOptions(patches=True, crown_budget=1 << 23)


@dataclasses.dataclass(frozen=True)
class Config(common.ExperimentConfig):
  """Models, methods and sizes of the bracket.

  Attributes:
    models: checkpoint folders of the first seed (quick: random init).
    methods: certificates for every model ('exact' only where affine).
    n_images: the first test images (all of them, misclassified ones count
      as neither certified nor robust).
    n_conv: test images for the conv net (its CROWN is the slow one).
    eps: L2 radii of the accuracy columns (1.58 is the literature's MNIST ε).
    batch_size: the engine's batch (certificate and attack).
    attack: the attack's options (untargeted over every label).
    paper_on_affine: also run `advjax.attack.PAPER` on the affine nets, against the
      exact minimum.
    conv_rtol: the conv net's searches stop once ρ is known within this
      fraction (its CROWN is ~10x slower than the MLPs'); the result is still
      the last certified ε.
    conv_units: the conv net's IBP and CROWN cut every pre-activation's
      interval by its per-unit Lipschitz bound (`lipschitz_units`; without
      it CROWN fell below the global Lipschitz bound there).
    conv_patches: the conv net's CROWN runs through its convolutions in
      patches and fc1 by its own dense pass (`patches=True`,
      `crown_budget=2**23`, issue 28: ~2× the median ρ/d of `conv_units`, ~15×
      its time), in `conv_dtype`; its cache folder reads 'crown+patches+fc'.
    conv_dtype: the float of that CROWN ('float32': its rounding in the
      slack, ~2× faster per trial, ~1% smaller radii than 'float64').
    more_seeds: further training seeds (checkpoints runs/models/seed<s>/) of
      `more_seeds_models` (every net; the conv net's seeds 1–2 take ≈ 19 min
      each to train), reported as mean ± sd over all seeds beside the first
      seed's full table.
    more_seeds_models: the nets bracketed at `more_seeds`.
    yardstick: also the benchmark's ReLU MLP (trained here, `yardstick_epochs`
      Adam epochs), certified by ibp, CROWN without the box, CROWN and
      α-CROWN: the measurement against plain CROWN.
  """
  models: tuple[str, ...] = MODELS
  methods: tuple[str, ...] = ("lipschitz", "ibp", "crown", "exact")
  n_images: int = 1000
  n_conv: int = 1000
  eps: tuple[float, ...] = (0.5, 1.0, 1.58, 2.0)
  batch_size: int = 100
  attack: AttackOptions = AttackOptions()
  paper_on_affine: bool = True
  conv_rtol: float = 0.01
  conv_units: bool = True
  conv_patches: bool = False
  conv_dtype: str = "float64"
  yardstick: bool = True
  yardstick_epochs: int = 3
  more_seeds: tuple[int, ...] = (1, 2)
  more_seeds_models: tuple[str, ...] = MODELS


def get_config(quick: bool = False) -> Config:
  """Every net at 1,000 images; quick: two random-init nets, 16 images."""
  if quick:
    return Config(**common.base(quick), models=("FC10(1e-4)", "FC100-100-10"),
                  n_images=16, n_conv=16, batch_size=8, attack=QUICK_ATTACK,
                  yardstick=False, more_seeds=())
  return Config(**common.base(quick))
