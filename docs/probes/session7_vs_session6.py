"""The default attack of session 7 (scale 'spread', box-aware screen, margin in ulps)
against session 6's (saved by scale_compare.py as 'raw'), same images and nets."""
import os, sys, json
import numpy as np
from advjax import attacks, checkpoint, data
name = sys.argv[1]; n = int(sys.argv[2])
model, params, meta = checkpoint.load(f"runs/models/seed0/{name}")
te = data.load("mnist", "test", os.environ["ADVJAX_DATA_DIR"])
x, y = te.x[:n], te.y[:n].astype(np.int32)
ok = np.asarray(model.apply(params, x)).argmax(-1) == y
res = {"net": name, "n": n}
for tag, t in (("targeted", (y + 1) % 10), ("untargeted", None)):
  r = attacks.lbfgs((model.apply, params), x, t) if t is not None else attacks.lbfgs((model.apply, params), x)
  d, suc = np.asarray(r.l2), np.asarray(r.success)
  old = np.load(f"/tmp/scale/cmp_{name}_{tag}_raw.npy")
  res[tag] = {"success": float(suc[ok].mean()), "mean_l2": float(d[ok & suc].mean()),
              "session6_mean_l2": float(old[ok].mean()), "ratio": float(d[ok].mean() / old[ok].mean()),
              "worse_by_1pct": int(np.sum(d[ok] > 1.01 * old[ok])), "passes": float(np.asarray(r.passes).mean())}
print(json.dumps(res))
