"""Adversarial training vs weight decay vs dropout; see configs/adv_training.py.

Each (seed, variant) trains into <runs>/advtrain/seed<s>/<variant>/ (resumable
per epoch, pools included) and is loaded once its checkpoint exists.
"""

from __future__ import annotations

import os

from advjax import advtrain
from experiments import common, tables
from experiments.configs import adv_training as config

markdown = tables.adv_training  # results.md

FIELDS = ("test_err", "success", "mean_distortion", "train_seconds")


def run(cfg: config.Config, workdir: str) -> dict:
  """Every variant for every seed: per-seed rows, mean ± sd per variant."""
  names = cfg.selected([v.name for v in cfg.variants])  # fails before any work
  tr, te = common.load_data(cfg)
  rows: list[dict] = []
  def results():
    return {"rows": rows, "summary": common.summarize_rows(rows, "variant", FIELDS),
            "seeds": list(cfg.seeds), "model": cfg.model, "n_train_used": len(tr.x)}
  items = [(s, v) for s in cfg.seeds for v in cfg.variants if v.name in names]
  for s, v in common.save_each(items, workdir, cfg, config, markdown, results):
    v_s, tc = advtrain.seeded(v, cfg.train, s)
    folder = os.path.join(cfg.runs_dir, "advtrain", f"seed{s}", v.name.replace(" ", "_"))
    model, params, meta = advtrain.fit(cfg.model, v_s, tr, tc, folder, cfg.progress)
    ev = advtrain.evaluate(model, params, te, cfg.n_eval, cfg.seed, cfg.eval_attack,
                           os.path.join(folder, "adv_eval"), cfg.progress)
    rows.append(dict(variant=v.name, seed=s, train_seconds=meta["train_seconds"], **ev))
  return results()


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
