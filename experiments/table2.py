"""Table 2: cross-model error of adversarial examples; see configs/table2.py.

Reuses Table 1's cached adversarial sets (<runs>/adv/table1/seed<s>/).
"""

from __future__ import annotations

from advjax import protocol
from experiments import common, tables
from experiments.configs import table2 as config

markdown = tables.table2  # results.md


def one_seed(cfg: config.Config, tr, seed: int, names) -> tuple[dict, dict, dict]:
  """(error matrix, distortion per row, clean errors) of one seed's models."""
  pairs, sets, dist, clean = {}, {}, {}, {}
  for n, (model, params, _, s) in common.adversarial_sets(cfg, tr, seed, names,
                                                          "table1").items():
    pairs[n] = (model, params)
    sets[n] = protocol.succeeded(s)
    dist[n] = protocol.mean_distortion(s)
    clean[n] = (tr.x[s["index"]], s["label"])
  noise, ndist = protocol.noise_rows(list(pairs.values()), tr, cfg.sigmas,
                                     cfg.n_noise, cfg.seed)
  m = protocol.transfer(pairs, {**sets, **noise})
  return m, {**dist, **ndist}, protocol.transfer(pairs, clean)


def run(cfg: config.Config, workdir: str) -> dict:
  """Table 2 for every seed; cells mean ± sd over seeds."""
  names = cfg.selected(cfg.models)  # a bad --only fails before any work
  tr, _ = common.load_data(cfg)
  per_seed = [one_seed(cfg, tr, s, names) for s in cfg.seeds]
  dist = {k: common.summarize([d[k] for _, d, _ in per_seed]) for k in per_seed[0][1]}
  return {"per_seed": [{"seed": s, "matrix": m, "distortion": d, "clean": c}
                       for s, (m, d, c) in zip(cfg.seeds, per_seed)],
          "matrix": common.summarize_matrices([m for m, _, _ in per_seed]),
          "clean": common.summarize_matrices([c for _, _, c in per_seed]),
          "distortion": dist, "seeds": list(cfg.seeds), "n_train_used": len(tr.x)}


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
