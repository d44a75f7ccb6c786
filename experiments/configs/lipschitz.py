"""Config: per-layer Lipschitz bounds (§4.3, Table 5) for AlexNet and the MNIST nets.

Paper: Table 5 (upper bounds on ‖W‖ of AlexNet's 5 convs and 3 FC layers,
ImageNet weights). We print the same rows for AlexNet (random init unless a
torchvision weights file is given), every layer including ReLU / max-pool / LRN
with its own bound, the product over the network and an empirical lower bound
(largest input-output Jacobian norm on data), for the trained MNIST checkpoints.

Command (full):  python experiments/lipschitz_bounds.py --models-dir runs/models
                 [--alexnet-weights alexnet-owt-7be5be79.pth]
Command (quick): python experiments/lipschitz_bounds.py --quick --out /tmp/lip
Runtime: 155 s measured on 2 CPU cores, mostly the two random-init AlexNets
(BUILD_NOTES.md §5); `--no-alexnet` ≈ 1 min; quick ≈ 5-10 s.
Expected: every conv/FC row has estimate ≤ certified bound with the FFT bound
within ~1% of the estimate at AlexNet sizes; the paper's values (ImageNet
weights) are in PAPER and are not expected to match random-init weights.
"""

from __future__ import annotations

# Table 5 of the paper: layer → (size, stride, upper bound).
PAPER = {
    "conv1": ("3×11×11×96", 4, 2.75), "conv2": ("96×5×5×256", 1, 10),
    "conv3": ("256×3×3×384", 1, 7), "conv4": ("384×3×3×384", 1, 7.5),
    "conv5": ("384×3×3×256", 1, 11), "fc1": ("9216×4096", None, 3.12),
    "fc2": ("4096×4096", None, 4), "fc3": ("4096×1000", None, 4),
}

# Checkpoint folders under --models-dir (as experiments/train_models.py names them).
MNIST_MODELS = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10",
                "FC200-200-10", "AE400-10", "P1-FC100-100-10",
                "P1-FC123-456-10", "P2-FC100-100-10", "conv")


def get_config(quick: bool = False) -> dict:
  """Models, tolerances and data sizes; `quick` uses random init and tiny sizes."""
  return {
      "mnist_models": ("FC10(1e-4)", "FC100-100-10") if quick
                      else MNIST_MODELS,
      "alexnets": () if quick else ("alexnet", "alexnet-torchvision"),
      "tol": 1e-4 if quick else 1e-5,  # Lanczos residual ‖WᵀWv − λv‖/λ
      "n_data": 16 if quick else 1000,  # MNIST test points for the Jacobian norms
      "n_alexnet_data": 2,  # random images for AlexNet's Jacobian norms
      "jacobian_iters": 30,
      "seed": 0,
  }
