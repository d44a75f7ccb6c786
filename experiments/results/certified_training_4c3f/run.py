"""Session 13: LMT on 4C3F, the net BCP's comparison trained (BCP's
`utils.select_model('mnist', 'large')`, its default `--model large`: Wong et
al.'s large MNIST net, conv 32@3x3, 32@4x4 s2, 64@3x3, 64@4x4 s2, dense 512,
512, 10), which is where the published LMT figure (86.48% / 40.55%) comes
from; sessions 10-11 trained LMT on wong-small only. The authors' LMT recipe
(c = 1, no ramp), 20 epochs, batch 50, Adam 1e-3, certified by the Lipschitz
bound on the first 500 test images (clean accuracy on all 10,000).

ADVJAX_DATA_DIR=../shared/data/mnist PYTHONPATH=. python \
    experiments/results/certified_training_4c3f/run.py [EPOCHS [SEEDS [N_IMAGES]]]
(SEEDS comma-separated, default 0; N_IMAGES default 500)
"""
import os
import sys

from advjax.certify import CertifyOptions
from experiments import certified_training
from experiments.configs import certified_training as config

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
seeds = tuple(int(s) for s in sys.argv[2].split(",")) if len(sys.argv) > 2 else (0,)
n = int(sys.argv[3]) if len(sys.argv) > 3 else 500
cell, = [c for c in config.cells(epochs) if c.name == "LMT 1.58"]
cell = cell._replace(name=f"LMT 1.58 4C3F {epochs}ep", model="4C3F",
                     certify=(CertifyOptions(method="lipschitz"),),
                     note="the authors' recipe on BCP's comparison net (4C3F)")
out = certified_training.run_side((cell,), os.path.dirname(__file__),
                                 f"LMT_4C3F-{epochs}ep-n{n}", n, seeds)
print(out["rows"])
