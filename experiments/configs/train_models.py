"""Config: train every model of Tables 1 and 3, and the MNIST conv net (§4.2).

Paper: Table 1 (train/test error of FC10(λ), FC100-100-10, FC200-200-10,
AE400-10) and Table 3 (FC100-100-10 and FC123-456-10 on P1, FC100-100-10' on
P2), all on the 60,000 MNIST training images; P1/P2 are disjoint halves of
30,000.

Each seed index s trains every job with training seed `job seed + 100·s` (the
P2 model keeps its offset 1, so it never shares an initialisation with P1's
FC100-100-10) into runs/models/seed<s>/<folder>/.

Command (full):  python -m experiments.train_models   (--config.seeds=0,1,2 for the spread)
Command (quick): python -m experiments.train_models --quick   (600 / 500 images)
Partial:         python -m experiments.train_models --only FC100-100-10
                 (results to experiments/results/partial/, checkpoints to runs/)
Fashion-MNIST:   python -m experiments.train_models --config.dataset=fashion_mnist
                 --only FC100-100-10 conv   (checkpoints in runs/models_fashion_mnist/;
                 the 10k-era run is experiments/results/train_models_fashion_mnist/)
Runtime: quick ≈ 25–40 s on 2 shared CPU cores; full ≈ 44 min per seed
(measured, seed 0 at 60k: conv 2,058 s, AE400-10 223 s, FC100-100-10 96 s,
the rest 19–70 s each).
Expected (measured, seed 0 at 60k; test error, paper's in PAPER): FC10(1e-4)
7.35%, FC10(1e-2) 9.30%, FC10(1) 21.74%, FC100-100-10 1.73%, FC200-200-10
1.79%, AE400-10 1.87%, P1-FC100-100-10 2.44%, P1-FC123-456-10 2.39%,
P2-FC100-100-10 2.28%, conv 0.65%; training error 0% for the hidden-layer nets.
"""

from __future__ import annotations

import dataclasses

from advjax.train import TrainConfig
from experiments import common

TITLE = "Train and test errors (§4.2, Tables 1 and 3)"

# Paper's Tables 1 and 3: (train error, test error) in %, "P1"/"P2" for Table 3.
PAPER = {
    "FC10(1e-4)": {"train": 6.7, "test": 7.4},
    "FC10(1e-2)": {"train": 10.0, "test": 9.4},
    "FC10(1)": {"train": 21.2, "test": 20.0},
    "FC100-100-10": {"train": 0.0, "test": 1.64},
    "FC200-200-10": {"train": 0.0, "test": 1.54},
    "AE400-10": {"train": 0.57, "test": 1.9},
    "P1-FC100-100-10": {"P1": 0.0, "P2": 2.4, "test": 2.0},
    "P1-FC123-456-10": {"P1": 0.0, "P2": 2.5, "test": 2.1},
    "P2-FC100-100-10": {"P1": 2.3, "P2": 0.0, "test": 2.1},
    "conv": {},
}


@dataclasses.dataclass(frozen=True)
class Job:
  """One model to train: checkpoint folder, model name, training half, config."""
  folder: str
  model: str
  half: str  # 'all', 'P1' or 'P2'
  cfg: TrainConfig
  ae_epochs: int = 0  # AE400-10: epochs of autoencoder pretraining
  # The sparse autoencoder's own weight decay, sparsity weight and target. The
  # paper's λ = 1e-6 is read as the softmax's; for the autoencoder it gives no
  # recipe, so UFLDL's (λ 3e-3, β 3, ρ 0.1) is used: measured, it gives 3.18%
  # test error and distortion 0.098, against 4.83% / 0.031 with λ 1e-6, β 1,
  # ρ 0.05 (BUILD_NOTES.md §1).
  ae: tuple[float, float, float] = (3e-3, 3.0, 0.1)


@dataclasses.dataclass(frozen=True)
class Config(common.ExperimentConfig):
  """Jobs, the P1/P2 split seed, the seed stride and an epochs override."""
  jobs: tuple[Job, ...] = ()
  split_seed: int = 0
  seed_stride: int = 100  # training seed of seed index s: job seed + stride·s
  epochs: int | None = None  # override every job's epochs (None: the job's)


def jobs(quick: bool) -> tuple[Job, ...]:
  """The ten models; `quick` shortens every schedule."""
  ep = (lambda n: max(2, n // 10)) if quick else (lambda n: n)
  # FC10: Adam, cosine decay. Full-batch L-BFGS to convergence (optimizer=
  # 'lbfgs', epochs=500) is available but overfits FC10(1e-4) on 10k images
  # (9.5% test error, measured); see BUILD_NOTES.md.
  fc10 = TrainConfig(lr=1e-3, epochs=ep(30), batch_size=64, schedule="cosine")
  mlp = TrainConfig(lr=1e-2, epochs=ep(60), batch_size=64, schedule="cosine")
  out = [Job(f"FC10({lam})", f"FC10({lam})", "all", fc10) for lam in ("1e-4", "1e-2", "1")]
  out += [Job("FC100-100-10", "FC100-100-10", "all", mlp),
          Job("FC200-200-10", "FC200-200-10", "all", mlp),
          Job("AE400-10", "AE400-10", "all",
              # lr 1e-2 spoils the autoencoder (5.65% test error, measured)
              dataclasses.replace(mlp, lr=3e-3, frozen=("code",)), ae_epochs=ep(40)),
          Job("P1-FC100-100-10", "FC100-100-10", "P1", mlp),
          Job("P1-FC123-456-10", "FC123-456-10", "P1", mlp),
          Job("P2-FC100-100-10", "FC100-100-10'", "P2", dataclasses.replace(mlp, seed=1)),
          Job("conv", "conv", "all",
              TrainConfig(epochs=ep(12), batch_size=64, schedule="cosine"))]
  return tuple(out)


def get_config(quick: bool = False) -> Config:
  """All ten models on all 60k images; quick: 600 training / 500 test images."""
  return Config(**common.base(quick), jobs=jobs(quick),
                n_train=600 if quick else None, n_test=500 if quick else None)
