"""Config: Table 1 — errors and average minimum distortion per model (§4.2).

Paper: Table 1 of Szegedy et al. Adversarial examples are made on training
images (as the paper), each towards a random wrong label drawn from a PRNG key,
on the images the model classifies correctly; the distortion is the paper's
per-pixel RMS averaged over successful examples.

Command (full):  python experiments/table1.py            (after train_models.py)
Command (quick): python experiments/table1.py --quick --models-dir /tmp/models
Runtime: full 99 s measured on 2 shared CPU cores (1,000 images × 6 models);
quick ≈ 15 s.
Expected (measured): 100% success for every model; distortion FC10(1e-4)
0.069, FC10(1e-2) 0.092, FC10(1) 0.136, FC100-100-10 0.066, FC200-200-10
0.070, AE400-10 0.095 (paper: 0.062, 0.1, 0.14, 0.058, 0.065, 0.086).
"""

MODELS = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10",
          "FC200-200-10", "AE400-10")

# Paper's Table 1: train error %, test error %, av. min distortion.
PAPER = {
    "FC10(1e-4)": (6.7, 7.4, 0.062), "FC10(1e-2)": (10.0, 9.4, 0.1),
    "FC10(1)": (21.2, 20.0, 0.14), "FC100-100-10": (0.0, 1.64, 0.058),
    "FC200-200-10": (0.0, 1.54, 0.065), "AE400-10": (0.57, 1.9, 0.086),
}


def get_config(quick: bool = False) -> dict:
  """Models, images per model, PRNG seed, attack options."""
  return {"models": MODELS, "n_images": 24 if quick else 1000, "seed": 0,
          "batch_size": 24 if quick else 250,
          "attack": {"bisect_steps": 3 if quick else 10,
                     "maxiter": 30 if quick else 100}}
