"""Table 1: train/test error and average minimum distortion; see configs/table1.py.

Writes experiments/results/table1/ (config.json, results.json, results.md,
distortion histogram PNG) and caches the adversarial sets in
<runs>/adv/table1/<model>/ (advjax.driver: resumable) for Table 2.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from advjax import attacks, checkpoint, data, driver, train  # noqa: E402
from experiments import common, plots  # noqa: E402
from experiments.configs import table1 as config  # noqa: E402


def base_images(model, params, ds, n: int, seed: int):
  """The first n images of a seeded permutation that the model gets right."""
  order = np.random.default_rng(seed).permutation(len(ds.x))
  ok = order[train.predict(model, params, ds.x[order]) == ds.y[order]]
  return np.sort(ok[:n])


def adversarial_set(folder: str, ds, cfg: dict, cache: str, progress=True) -> dict:
  """Adversarial examples for one checkpoint on its correctly classified images."""
  model, params, meta = checkpoint.load(folder)
  idx = base_images(model, params, ds, cfg["n_images"], cfg["seed"])
  key = jax.random.fold_in(jax.random.PRNGKey(cfg["seed"]), len(idx))
  target = np.asarray(attacks.random_targets(key, ds.y[idx], model.num_classes))
  res = driver.run(common.logits_fn(model, params), ds.x[idx], target, cache,
                   label=ds.y[idx], index=idx, batch_size=cfg["batch_size"],
                   progress=progress, **cfg["attack"])
  return dict(res, meta=meta)


def row(name: str, s: dict) -> dict:
  """One Table 1 row from an adversarial set."""
  ok = s["success"].astype(bool)
  e = s["meta"]["errors"]
  return {"model": name, "train_err": e.get("all"), "test_err": e["test"],
          "n": int(len(ok)), "success": float(ok.mean()),
          "mean_distortion": float(s["distortion"][ok].mean()),
          "median_distortion": float(np.median(s["distortion"][ok])),
          "mean_l2": float(s["l2"][ok].mean())}


def table(rows: list[dict]) -> str:
  """Markdown: ours beside the paper's Table 1."""
  out = ["| model | train err | test err | av. min distortion | success (n) "
         "| paper: train / test / distortion |", "| --- " * 6 + "|"]
  for r in rows:
    p = config.PAPER[r["model"]]
    out.append(f"| {r['model']} | {100 * r['train_err']:.2f}% | "
               f"{100 * r['test_err']:.2f}% | {r['mean_distortion']:.4f} | "
               f"{100 * r['success']:.1f}% ({r['n']}) | {p[0]}% / {p[1]}% / {p[2]} |")
  return "\n".join(out) + "\n"


def main(argv=None) -> dict:
  a, cfg, res_dir = common.parse(__doc__, "table1", config, argv, runs=True)
  ds = data.load("mnist", "train", a.data_dir)
  rows, sets = [], {}
  for name in cfg["models"]:
    cache = common.adv_cache(a.runs, "table1", name, a.quick)
    sets[name] = adversarial_set(os.path.join(a.models_dir, name), ds, cfg, cache,
                                 not a.no_progress)
    rows.append(row(name, sets[name]))
    common.write_results(res_dir, {"rows": rows}, table(rows), "Table 1", argv)
  plots.distortion_histograms(
      {n: s["distortion"][s["success"].astype(bool)] for n, s in sets.items()},
      os.path.join(res_dir, "distortion_hist.png"))
  print(table(rows))
  return {"rows": rows}


if __name__ == "__main__":
  main()
