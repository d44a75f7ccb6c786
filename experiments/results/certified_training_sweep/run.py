"""Session 13: LMT's guarded radius c swept on wong-small (the paper's form:
Recipe('lmt', eps=1, c): + sqrt(2)*c*L on the non-true logits, clipped by
margin / (sqrt(2)*c*L)), 20 epochs, batch 50, Adam 1e-3, seed 0, certified by
the Lipschitz bound on the first 500 test images. The question: does a larger
c trade clean accuracy for certified accuracy at 1.58 along a curve that passes
the published LMT point (86.48% clean / 40.55% certified)?

Measured (run with C = 2.0 2.5 3.0 4.0 5.0 6.0; clean % on 10,000 / certified % at
1.58 / attacked % at 1.58, first 500): c = 2.0: 90.80 / 22.6 / 50.4; 2.5: 89.86 /
21.6 / 48.8; 3.0: 88.78 / 27.8 / 47.0; 4.0: 88.54 / 22.4 / 46.4; 5.0: 88.39 / 20.0 /
46.2; 6.0: 88.36 / 19.8 / 45.8 (c = 1.58, session 10: 92.97 / 15.8 / 54.6). The curve
never passes near the published point: certified peaks at 27.8% and clean stays above 88%.

ADVJAX_DATA_DIR=../shared/data/mnist PYTHONPATH=. python \\
    experiments/results/certified_training_sweep/run.py C [C ...]
"""
import os
import sys

from advjax.certify import CertifyOptions
from experiments import certified_training
from experiments.configs import certified_training as config

base, = [c for c in config.cells() if c.name == "LMT c=1.58"]
cells = tuple(base._replace(name=f"LMT c={c}", recipe=base.recipe._replace(c=float(c)),
                            certify=(CertifyOptions(method="lipschitz"),),
                            note=f"the paper's c = {c} as the guarded radius")
              for c in sys.argv[1:])
out = certified_training.run_side(cells, os.path.dirname(__file__), "lmt_c-n500", 500,
                                 progress=False)
for r in out["rows"]:
  print(r["cell"], r["clean_acc"], r.get("certified@1.58"), r.get("attacked@1.58"),
        r.get("median_ratio"))
