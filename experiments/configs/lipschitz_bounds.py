"""Config: per-layer Lipschitz bounds (§4.3, Table 5) for AlexNet and the MNIST nets.

Paper: Table 5 (upper bounds on ‖W‖ of AlexNet's 5 convs and 3 FC layers,
ImageNet weights). We print the same rows for AlexNet (random init unless a
torchvision weights file is given), every layer including ReLU / max-pool / LRN
with its own bound, the product over the network and an empirical lower bound
(largest input-output Jacobian norm on data), for the trained MNIST checkpoints.

Command (full):  python -m experiments.lipschitz_bounds     (after experiments.train_models;
                 the models of the first seed; torchvision weights with
                 --config.alexnet_weights=alexnet-owt-7be5be79.pth)
Command (quick): python -m experiments.lipschitz_bounds --quick
Runtime: Table 5 of the two random-init AlexNets 19 s + 16 s measured on 2
CPU cores shared at load ~5 with OPENBLAS_NUM_THREADS=1 (every row 0.25-4.9 s;
38 s + 57 s before issue 13; with threaded BLAS on the loaded machine 2-10×
more and erratic, BUILD_NOTES.md); the MNIST models ≈ 1 min
(`--config.alexnets=` for none); quick ≈ 5-10 s.
Expected: every conv/FC row has estimate ≤ certified bound with the FFT bound
within ~1% of the estimate at AlexNet sizes; the paper's values (ImageNet
weights) are in PAPER and are not expected to match random-init weights.
"""

from __future__ import annotations

import dataclasses

from experiments import common

TITLE = "Per-layer Lipschitz bounds (§4.3, Table 5)"

# Table 5 of the paper: layer → (size, stride, upper bound).
PAPER = {
    "conv1": ("3×11×11×96", 4, 2.75), "conv2": ("96×5×5×256", 1, 10),
    "conv3": ("256×3×3×384", 1, 7), "conv4": ("384×3×3×384", 1, 7.5),
    "conv5": ("384×3×3×256", 1, 11), "fc1": ("9216×4096", None, 3.12),
    "fc2": ("4096×4096", None, 4), "fc3": ("4096×1000", None, 4),
}

# Checkpoint folders under runs/models/seed<s>/ (as experiments.train_models names them).
MNIST_MODELS = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10",
                "FC200-200-10", "AE400-10", "P1-FC100-100-10",
                "P1-FC123-456-10", "P2-FC100-100-10", "conv")


@dataclasses.dataclass(frozen=True)
class Config(common.ExperimentConfig):
  """Models, tolerances and data sizes of Table 5.

  Attributes:
    mnist_models: checkpoint folders (of the first seed); quick: random init
      where a checkpoint is missing.
    alexnets: AlexNet variants (random init unless `alexnet_weights`).
    alexnet_weights: torchvision state_dict (.pth/.npz) for
      'alexnet-torchvision' (None: random init).
    pairs: .npz with 'x' and 'x_adv' (MNIST) for the pair ratios (None: none).
    tol: Lanczos residual ‖WᵀWv − λv‖/λ.
    n_data: MNIST test points for the Jacobian norms (the first n_data).
    n_alexnet_data: random images for AlexNet's Jacobian norms.
    jacobian_iters: power iterations per Jacobian norm.
    seed: random init and the AlexNet points.
  """
  mnist_models: tuple[str, ...] = MNIST_MODELS
  alexnets: tuple[str, ...] = ("alexnet", "alexnet-torchvision")
  alexnet_weights: str | None = None
  pairs: str | None = None
  tol: float = 1e-5
  n_data: int = 1000
  n_alexnet_data: int = 2
  jacobian_iters: int = 30
  seed: int = 0


def get_config(quick: bool = False) -> Config:
  """Every MNIST model and both AlexNets; quick: two random-init MNIST nets."""
  if quick:
    return Config(**common.base(quick), mnist_models=("FC10(1e-4)", "FC100-100-10"),
                  alexnets=(), tol=1e-4, n_data=16)
  return Config(**common.base(quick))
