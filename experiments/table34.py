"""Tables 3–4: cross-training-set generalisation; see configs/table34.py.

Adversarial sets (on test images) are cached in <runs>/adv/table34/seed<s>/.
"""

from __future__ import annotations

from advjax import protocol
from experiments import common, tables
from experiments.configs import table34 as config

markdown = tables.table34  # results.md


def one_seed(cfg: config.Config, te, seed: int, names) -> tuple[list, dict, dict]:
  """(Table 3 rows, Table 4 matrix, distortion per row) of one seed's models."""
  pairs, adv, amp, dist, rows = {}, {}, {}, {}, []
  for n, (model, params, meta, s) in common.adversarial_sets(cfg, te, seed, names,
                                                             "table34").items():
    pairs[n] = (model, params)
    adv[n], dist[n] = protocol.succeeded(s), protocol.mean_distortion(s)
    amp[f"{n} amplified"], dist[f"{n} amplified"] = protocol.amplified(te, s, cfg.amplify)
    e = meta["errors"]
    rows.append({"model": n, "seed": seed, "P1": e["P1"], "P2": e["P2"],
                 "test": e["test"], "success": float(s["success"].mean()),
                 "distortion": dist[n]})
  noise, ndist = protocol.noise_rows(list(pairs.values()), te, cfg.sigmas,
                                     cfg.n_noise, cfg.seed)
  small, *large = list(noise)  # the paper's layout: smallest σ, amplified, the rest
  order = list(adv) + [small] + list(amp) + large
  sets = {**adv, **noise, **amp}
  m4 = protocol.transfer(pairs, {k: sets[k] for k in order})
  return rows, m4, {**dist, **ndist}


def run(cfg: config.Config, workdir: str) -> dict:
  """Tables 3 and 4 for every seed; mean ± sd over seeds."""
  names = cfg.selected(cfg.models)  # a bad --only fails before any work
  tr, te = common.load_data(cfg)
  per_seed = [one_seed(cfg, te, s, names) for s in cfg.seeds]
  rows = [r for rs, _, _ in per_seed for r in rs]
  dist = {k: common.summarize([d[k] for _, _, d in per_seed]) for k in per_seed[0][2]}
  return {"table3": rows,
          "summary3": common.summarize_rows(rows, "model", ("P1", "P2", "test", "success",
                                                            "distortion")),
          "per_seed": [{"seed": s, "table4": m, "distortion": d}
                       for s, (_, m, d) in zip(cfg.seeds, per_seed)],
          "table4": common.summarize_matrices([m for _, m, _ in per_seed]),
          "distortion": dist, "seeds": list(cfg.seeds),
          "n_train_used": len(tr.x)}


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
