"""Session 14: GloRo's MNIST ε = 1.58 command as its authors run it (klasleino/gloro,
tools/README.md: TRADES-KL λ = 1.5, the '-log-' ε ramp to 1.1·ε over the first half,
Adam 1e-3 held for half the epochs then decayed to 1e-6, batch 512), on GloRo's 2C2F
(wong-small's layers with MinMax, orthogonal init) or its 4C3F, for EPOCHS epochs
(the authors: 300); certified on the first N test images by the Lipschitz bound and
CROWN with its floor where N <= 1000 (clean accuracy on all 10,000).

Measured (300 epochs, 2C2F, seed 0, N = 1000, quiet): 95.15% clean; certified 84.6 /
71.2 / 50.8 / 35.3% at 0.5 / 1.0 / 1.58 / 2.0; attacked 62.7% at 1.58; median ρ/d
0.810; 4.7 s per epoch; CROWN certified no radius above the Lipschitz bound (0 of 1,000).
Against epochs (seed 0, N = 10000, Lipschitz bound; clean / certified / attacked at 1.58,
median ρ/d): 50 epochs 94.04 / 51.23 / 63.59%, 0.793; 100 epochs 94.61 / 53.37 / 65.01%,
0.806; 300 epochs (experiments/results/certified_training/, seed 0) 95.15 / 55.68 / 66.98%,
0.816. 4C3F, 10 epochs (N = 2000): collapsed (10.09% clean, constant), 126 s per epoch.

ADVJAX_DATA_DIR=../shared/data/mnist PYTHONPATH=. python \\
    experiments/results/certified_training_gloro/run.py EPOCHS [MODEL [N [SEEDS]]]
(MODEL 2C2F or 4C3F, default 2C2F; N default 500; SEEDS comma-separated, default 0)
"""
import os
import sys

from advjax.certify import CertifyOptions
from experiments import certified_training
from experiments.configs import certified_training as config

epochs = int(sys.argv[1])
model = sys.argv[2] if len(sys.argv) > 2 else "2C2F"
n = int(sys.argv[3]) if len(sys.argv) > 3 else 500
seeds = tuple(int(s) for s in sys.argv[4].split(",")) if len(sys.argv) > 4 else (0,)
cell = config.gloro_cell(f"GloRo 1.58 {model} {epochs}ep", model, epochs,
                         f"GloRo's MNIST 1.58 command on {model}, {epochs} epochs")
if n <= 1000:  # CROWN measured beside the Lipschitz bound (~0.17 s per image)
  cell = cell._replace(certify=cell.certify + (
      CertifyOptions(method="crown", lipschitz_floor=True, rtol=0.01),))
out = certified_training.run_side((cell,), os.path.dirname(__file__),
                                 f"gloro_{model}-{epochs}ep-n{n}", n, seeds)
for r in out["rows"]:
  print({k: r.get(k) for k in ("cell", "seed", "clean_acc", "certified@1.58", "attacked@1.58",
                               "median_ratio", "seconds_per_epoch", "collapsed")})
