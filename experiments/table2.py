"""Table 2: cross-model error of adversarial examples; see configs/table2.py."""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from advjax import checkpoint, data, evaluate, train  # noqa: E402
from experiments import common, table1  # noqa: E402
from experiments.configs import table2 as config  # noqa: E402


def predictors(models_dir: str, names) -> dict:
  """name -> (inputs -> predicted labels) for each checkpoint."""
  out = {}
  for n in names:
    m, p, _ = checkpoint.load(os.path.join(models_dir, n))
    out[n] = (lambda m, p: lambda x: train.predict(m, p, x))(m, p)
  return out


def noise_rows(preds: dict, ds, cfg: dict) -> tuple[dict, dict]:
  """Gaussian-noise sets on images every model gets right; their distortions."""
  order = np.random.default_rng(cfg["seed"] + 1).permutation(len(ds.x))
  ok = np.ones(len(order), bool)
  for f in preds.values():
    ok &= f(ds.x[order]) == ds.y[order]
  idx = order[ok][: cfg["n_noise"]]
  sets, dist = {}, {}
  for i, s in enumerate(cfg["sigmas"]):
    xn = evaluate.gaussian_noise(jax.random.PRNGKey(100 + i), ds.x[idx], s)
    name = f"Gaussian noise σ={s:g}"
    sets[name] = (xn, ds.y[idx])
    dist[name] = float(evaluate.distortion(xn - ds.x[idx]).mean())
  return sets, dist


def main(argv=None) -> dict:
  a, cfg, res_dir = common.parse(__doc__, "table2", config, argv, runs=True)
  ds = data.load("mnist", "train", a.data_dir)
  preds = predictors(a.models_dir, cfg["models"])
  sets, dist, clean = {}, {}, {}
  for n in cfg["models"]:
    cache = common.adv_cache(a.runs, "table1", n, a.quick)
    s = table1.adversarial_set(os.path.join(a.models_dir, n), ds, cfg, cache,
                               not a.no_progress)
    ok = s["success"].astype(bool)
    sets[n] = (s["x_adv"][ok], s["label"][ok])
    dist[n] = float(s["distortion"][ok].mean())
    clean[n] = evaluate.error_matrix(preds, {n: (ds.x[s["index"]], s["label"])})[n]
  noise, ndist = noise_rows(preds, ds, cfg)
  sets.update(noise)
  dist.update(ndist)
  m = evaluate.error_matrix(preds, sets)
  md = evaluate.markdown_matrix(m, config.PAPER, {k: f"{v:.3f}" for k, v in dist.items()})
  md += ("\nCells: ours (paper). Clean error of each column model on each row's "
         "base images (before the attack):\n\n" + evaluate.markdown_matrix(clean))
  common.write_results(res_dir, {"matrix": m, "distortion": dist, "clean": clean},
                       md, "Table 2: cross-model generalisation", argv)
  print(md)
  return {"matrix": m, "distortion": dist}


if __name__ == "__main__":
  main()
