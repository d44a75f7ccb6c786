"""Config: units of φ(x) vs random directions, measured (paper §3, Figures 1–2).

Paper: §3 shows rows of the MNIST test images that maximise one unit,
argmax_x ⟨φ(x), e_i⟩ (Figure 1), beside rows that maximise a random direction,
argmax_x ⟨φ(x), v⟩ (Figure 2), and says both look equally "semantic". It gives
no number. advjax measures the coherence of every top-k set (label purity,
pairwise label agreement, mean pairwise cosine in another network's feature
space and in pixel space) for all units and as many random unit-norm Gaussian
directions, against a null of k test images drawn at random, with bootstrap 95%
CIs and a permutation test of units − random directions.

Command (full):  python -m experiments.unit_analysis     (after experiments.train_models;
                 the models of the first seed, runs/models/seed0/)
Command (quick): python -m experiments.unit_analysis --quick   (random-init
                 models unless quick checkpoints exist, 200 images; seconds)
Runtime: full ≈ 2.5 min on 2 shared CPU cores (measured 2 min 24 s and
2 min 32 s end to end, 137.5 s inside the script; top-k itself 0.1–15 s per
layer, the rest is statistics and figures); quick ≈ 18 s.
Expected (measured on the final runs/models checkpoints of
experiments/train_models.py, 10k training images; the paper has no number):
conv/relu3, top-8 label purity units 0.873 vs random directions 0.845
(permutation p = 0.25): the claim holds there. FC100-100-10 sigmoid2: units
LESS coherent than random directions (0.771 vs 0.844, p = 0.017; at k = 32
−0.10, p = 3e-4); FC200-200-10 sigmoid1 and conv/pool2: units slightly MORE
coherent (p = 0.0065 and 0.017). Null (random
8-sets): purity 0.30, pair agreement 0.10, cosines ≈ 0.
"""

from __future__ import annotations

import dataclasses

from experiments import common

TITLE = "Units vs random directions (§3), measured"


@dataclasses.dataclass(frozen=True)
class Analysis:
  """One (model, layer) whose units are analysed, judged in `other`'s space.

  Attributes:
    model: checkpoint folder under --models-dir (also the model name).
    layer: layer whose φ(x) is projected on e_i and on v.
    other: checkpoint folder of the network whose features judge similarity
      (a different trained model, so the judge is not the analysed net itself).
    other_layer: that network's penultimate layer.
    init: analyse `model` with random-init parameters instead (the untrained
      control: how much coherence comes from the architecture alone).
  """
  model: str
  layer: str
  other: str
  other_layer: str
  init: bool = False

  @property
  def key(self) -> str:
    """The name `--only` selects it by: 'model/layer' (+ ' (untrained)')."""
    return f"{self.model}/{self.layer}" + (" (untrained)" if self.init else "")


@dataclasses.dataclass(frozen=True)
class Config(common.ExperimentConfig):
  """Sizes of the §3 analysis; `get_config` gives the full and quick ones.

  Attributes:
    analyses: the (model, layer) pairs (`--only model/layer`, with
      ' (untrained)' for the controls).
    ks: sizes of the top-k sets measured; ks[0] is also the figures' row length.
    n_random: random directions per layer (0: as many as the layer's units).
    n_null: random k-sets of test images (the chance baseline).
    n_boot, n_perm: bootstrap resamples and permutations.
    fig_rows: rows per panel in the Figure 1/2-like grids.
    batch_size: images per forward pass.
    seed: seeds the random directions (PRNGKey), null sets, figure rows, stats.
  The image set I is the first `n_test` test images (None: all 10,000); the
  models are those of the first of `seeds`; a quick run falls back to
  random-init parameters where a checkpoint is missing.
  """
  analyses: tuple[Analysis, ...] = ()
  ks: tuple[int, ...] = (8, 32)
  n_random: int = 0
  n_null: int = 2000
  n_boot: int = 10000
  n_perm: int = 10000
  fig_rows: int = 6
  batch_size: int = 1000
  seed: int = 0


def get_config(quick: bool = False) -> Config:
  """The paper's setting (conv net, test set as I) plus the FC nets."""
  conv = ("conv", "relu3")
  fc = ("FC200-200-10", "sigmoid2")
  if quick:
    return Config(**common.base(quick),
                  analyses=(Analysis("conv", "relu3", *fc),
                            Analysis("FC100-100-10", "sigmoid2", *conv)),
                  ks=(4,), n_null=100, n_boot=200, n_perm=200, fig_rows=3,
                  n_test=200, batch_size=64)
  return Config(**common.base(quick), analyses=(
      Analysis("conv", "relu3", *fc), Analysis("conv", "pool2", *fc),
      Analysis("FC100-100-10", "sigmoid2", *conv),
      Analysis("FC100-100-10", "sigmoid1", *conv),
      Analysis("FC200-200-10", "sigmoid2", *conv),
      Analysis("FC200-200-10", "sigmoid1", *conv),
      Analysis("conv", "relu3", *fc, init=True),
      Analysis("FC100-100-10", "sigmoid2", *conv, init=True)))
