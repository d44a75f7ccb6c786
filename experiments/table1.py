"""Table 1: train/test error and average minimum distortion; see configs/table1.py.

Adversarial sets are cached through `advjax.runs.driver` in
<runs>/adv/table1/seed<s>/<model>/ (resumable); table2.py reuses them.
"""

from __future__ import annotations

import os

import numpy as np

from advjax import protocol
from experiments import common, plots, tables
from experiments.configs import table1 as config

markdown = tables.table1  # results.md

FIELDS = ("train_err", "test_err", "success", "mean_distortion", "median_distortion",
          "mean_l2")


def row(name: str, seed: int, meta: dict, s: dict) -> dict:
  """One Table 1 row of one seed's model."""
  ok = s["success"].astype(bool)
  e = meta["errors"]
  return {"model": name, "seed": seed, "train_err": e.get("all"), "test_err": e["test"],
          "n": int(len(ok)), "success": float(ok.mean()),
          "mean_distortion": protocol.mean_distortion(s),
          "median_distortion": float(np.median(s["distortion"][ok])) if ok.any() else None,
          "mean_l2": float(s["l2"][ok].mean()) if ok.any() else None}


def run(cfg: config.Config, workdir: str) -> dict:
  """Table 1 over every seed: per-seed rows and mean ± sd per model."""
  names = cfg.selected(cfg.models)  # a bad --only fails before any work
  tr, _ = common.load_data(cfg)
  rows, hist = [], {}
  for seed in cfg.seeds:
    for name, (_, _, meta, s) in common.adversarial_sets(cfg, tr, seed, names, "table1").items():
      rows.append(row(name, seed, meta, s))
      if seed == cfg.seeds[0]:
        hist[name] = s["distortion"][s["success"].astype(bool)]
  plots.distortion_histograms(hist, os.path.join(workdir, "distortion_hist.png"))
  return {"rows": rows, "summary": common.summarize_rows(rows, "model", FIELDS),
          "seeds": list(cfg.seeds), "n_train_used": len(tr.x)}


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
