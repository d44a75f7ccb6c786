"""Config: the figures of §4.2 (the paper's Figures 5 and 7, and noise digits).

Paper: Figure 5/7 — original, perturbation magnified ×10, adversarial image;
MNIST adversarial examples beside Gaussian-noise digits of the same distortion
(the noisy ones are still mostly classified right). advjax also plots, per
model, a histogram of minimum distortions (in table1.py).

Command (full):  python experiments/figures.py          (after table1.py)
Command (quick): python experiments/figures.py --quick --models-dir /tmp/models
Runtime: 227 s measured on 2 shared CPU cores (the conv net's 64 attacks
dominate); quick ≈ 10 s.
Expected: perturbations invisible at ×1, structured at ×10; noise digits at the
same RMS keep their labels (error a few %, measured on `n_noise` images).
"""

MODELS = ("FC10(1e-2)", "FC100-100-10", "FC200-200-10", "AE400-10", "conv")


def get_config(quick: bool = False) -> dict:
  """Models, examples per model, seed, attack options for the conv net."""
  # The conv net is left out of the quick size: XLA:CPU runs convolutions
  # inside the attack's loops slowly (BUILD_NOTES.md), so it costs minutes.
  return {"models": MODELS[:2] if quick else MODELS, "per_model": 2 if quick else 4, "seed": 0,
          "n_noise": 20 if quick else 500,
          # conv-net attacks run ~40 img/s on this CPU (BUILD_NOTES.md): fewer images
          "n_noise_conv": 64,
          "attack": {"bisect_steps": 3 if quick else 10,
                     "maxiter": 30 if quick else 100}}
