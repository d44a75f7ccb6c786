"""Default attack with scale='raw' (session 6) vs 'spread' (session 7), same images."""
import os, sys, json, time
import numpy as np, jax
from advjax import attacks, checkpoint, data
name = sys.argv[1]; n = int(sys.argv[2])
model, params, meta = checkpoint.load(f"runs/models/seed0/{name}")
te = data.load("mnist", "test", os.environ["ADVJAX_DATA_DIR"])
x, y = te.x[:n], te.y[:n].astype(np.int32)
out = np.asarray(model.apply(params, x)); s = out.max(-1) - out.min(-1)
ok = out.argmax(-1) == y
res = {"net": name, "n": n, "correct": int(ok.sum()), "spread_median": float(np.median(s))}
for tag, t in (("targeted", (y + 1) % 10), ("untargeted", None)):
  for sc in ("raw", "spread"):
    o = attacks.AttackOptions(scale=sc)
    r = attacks.lbfgs((model.apply, params), x, t, options=o) if t is not None else attacks.lbfgs((model.apply, params), x, options=o)
    d, suc = np.asarray(r.l2), np.asarray(r.success)
    res[f"{tag}/{sc}"] = {"success": float(suc[ok].mean()), "mean_l2": float(d[ok & suc].mean()),
                          "passes": float(np.asarray(r.passes).mean())}
    np.save(f"/tmp/scale/cmp_{name}_{tag}_{sc}.npy", d)
  a, b = (np.load(f"/tmp/scale/cmp_{name}_{tag}_{k}.npy") for k in ("raw", "spread"))
  res[f"{tag}/ratio"] = float(b[ok].mean() / a[ok].mean())
print(json.dumps(res))
