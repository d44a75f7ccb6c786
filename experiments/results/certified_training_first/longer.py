"""Session 10: LMT c = 1.58 trained 3× longer (60 epochs), certified by the
Lipschitz bound only (CROWN added nothing on these nets, patches_check.py).

PYTHONPATH=. python experiments/results/certified_training_first/longer.py
"""
import dataclasses
import os

from advjax.certify import CertifyOptions
from experiments import certified_training
from experiments.configs import certified_training as config

cell, = [c for c in config.cells() if c.name == "LMT c=1.58"]
cell = cell._replace(name="LMT c=1.58 60 epochs", certify=(CertifyOptions(method="lipschitz"),),
                     train=dataclasses.replace(cell.train, epochs=60))
cfg = dataclasses.replace(config.get_config(), cells=(cell,), n_images=500, progress=False,
                          data_dir=os.environ["ADVJAX_DATA_DIR"])
out = certified_training.run(cfg, os.path.join(os.path.dirname(__file__), "LMT_c=1.58-60ep-n500"))
print(out["rows"])
