"""Session 10: does CROWN through the convolutions (patches) certify more of the
LMT-trained wong-small than the cell's certificate (Lipschitz, CROWN with the
floor and interval conv bounds)? First N test images of the 'LMT c=1.58' cell.

python experiments/results/certified_training_first/patches_check.py N
(run after `python -m experiments.certified_training --only "LMT c=1.58"
--config.n_images=500`, whose attack cache it reads).
"""
import json
import os
import sys
import time

import numpy as np

from advjax import checkpoint, data, evaluate, inputs
from advjax.certify import CertifyOptions
from advjax.runs import driver, jobs
from experiments.configs import certified_training as config

N = int(sys.argv[1])  # the first N of the cell's 500 images
folder = os.path.join("runs", "certified_training", "seed0", "LMT_c=1.58")
model, params, _ = checkpoint.load(folder)
te = data.load("mnist", "test", os.environ["ADVJAX_DATA_DIR"])
cell = inputs.problem((model.apply, params), te.x[:500], label=te.y[:500].astype(np.int32),
                      check_logits=False)  # the cell's problem: its caches are read back
x, y = te.x[:N], te.y[:N].astype(np.int32)
pb = inputs.problem((model.apply, params), x, label=y, check_logits=False)
cfg = config.get_config()
adv = driver.execute(jobs.attack(cfg.attack, targeted=False), cell,
                     os.path.join(folder, "attack"), batch_size=100, progress=False)
d = np.where(adv["success"], adv["l2"], np.inf)[:N]
pred = np.asarray(model.apply(params, x)).argmax(1)
out = {}
for name, opts in (("cell: max(lipschitz, crown+floor)", None),
                   ("crown+floor, patches", CertifyOptions(method="crown", lipschitz_floor=True,
                                                           rtol=0.01, patches=True))):
  t = time.time()
  if opts is None:
    rho = np.maximum(*(driver.execute(jobs.certify(o), cell, os.path.join(folder, n),
                                      batch_size=100, progress=False)["l2"][:N]
                       for o, n in ((CertifyOptions(method="lipschitz"), "lipschitz"),
                                    (CertifyOptions(method="crown", lipschitz_floor=True,
                                                    rtol=0.01), "crown+floor"))))
  else:
    rho = driver.execute(jobs.certify(opts), pb, os.path.join(folder, f"crown+floor+patches-{N}"),
                         batch_size=25, progress=True)["l2"]
  evaluate.check_bracket(rho, d, name)
  out[name] = {"certified@1.58": evaluate.certified_accuracy(rho, pred == y, 1.58),
               "certified@1.0": evaluate.certified_accuracy(rho, pred == y, 1.0),
               "median_ratio": evaluate.median_ratio(rho, d, pred == y),
               "seconds": round(time.time() - t, 1)}
  print(name, out[name], flush=True)
json.dump({"n": N, **out}, open(os.path.join(os.path.dirname(__file__), f"patches_check_{N}.json"), "w"), indent=1)
