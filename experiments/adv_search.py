"""The budgeted adversarial-training search; see configs/adv_search.py.

One seed (the first of cfg.seeds). Every cell trains into
<runs>/adv_search/seed<s>/<cell>/ and writes row.json there when finished,
then the results table; a rerun skips finished cells.
"""

from __future__ import annotations

import json
import os

from advjax import advtrain
from experiments import common, tables
from experiments.configs import adv_search as config

markdown = tables.adv_search  # results.md


def run_cell(cfg: config.Config, v, tr, te, folder: str) -> dict:
  """Trains and measures one cell, or reads its finished row."""
  path = os.path.join(folder, "row.json")
  if os.path.exists(path):
    return common.read_json(path)
  v_s, tc = advtrain.seeded(v, cfg.train, cfg.seeds[0])
  model, params, meta = advtrain.fit(cfg.model, v_s, tr, tc, folder, cfg.progress)
  ev = advtrain.evaluate(model, params, te, cfg.n_eval, cfg.seed, cfg.eval_attack,
                         os.path.join(folder, "adv_eval"), cfg.progress)
  row = dict(cell=v.name, note=v.note, seed=cfg.seeds[0], epochs=tc.epochs,
             pools=[p._asdict() for p in v.pools], dropout=v.dropout,
             train_seconds=meta["train_seconds"], **ev)
  common.dump_json(path, row)
  return json.loads(json.dumps(common.plain(row)))


def run(cfg: config.Config, workdir: str) -> dict:
  """Every selected cell in order; the table is rewritten after each."""
  names = cfg.selected([v.name for v in cfg.cells])  # fails before any work
  tr, te = common.load_data(cfg)
  rows: list[dict] = []
  def results():
    return {"cells": rows, "n_cells": len(names), "seed": cfg.seeds[0],
            "model": cfg.model, "n_train_used": len(tr.x)}
  cells = [v for v in cfg.cells if v.name in names]
  for v in common.save_each(cells, workdir, cfg, config, markdown, results):
    folder = os.path.join(cfg.runs_dir, "adv_search", f"seed{cfg.seeds[0]}",
                          v.name.replace(" ", "_"))
    rows.append(run_cell(cfg, v, tr, te, folder))
  return results()


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
