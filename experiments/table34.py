"""Tables 3–4: cross-training-set generalisation; see configs/table34.py."""

from __future__ import annotations

import os
import sys


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from advjax import data, evaluate  # noqa: E402
from experiments import common, table1, table2  # noqa: E402
from experiments.configs import table34 as config  # noqa: E402


def table3(sets: dict) -> tuple[list[dict], str]:
  """Table 3 rows (errors from each checkpoint's metadata) and Markdown."""
  rows, md = [], ["| model | err P1 | err P2 | err test | min av. distortion | "
                  "paper: P1 / P2 / test / distortion |", "| --- " * 6 + "|"]
  for n, s in sets.items():
    e, ok = s["meta"]["errors"], s["success"].astype(bool)
    r = {"model": n, "P1": e["P1"], "P2": e["P2"], "test": e["test"],
         "success": float(ok.mean()), "distortion": float(s["distortion"][ok].mean())}
    rows.append(r)
    p = config.PAPER3[n]
    md.append(f"| {config.LABELS[n]} (on {n[:2]}) | {100 * r['P1']:.2f}% | "
              f"{100 * r['P2']:.2f}% | {100 * r['test']:.2f}% | "
              f"{r['distortion']:.4f} | {p[0]}% / {p[1]}% / {p[2]}% / {p[3]} |")
  return rows, "\n".join(md) + "\n"


def main(argv=None) -> dict:
  a, cfg, res_dir = common.parse(__doc__, "table34", config, argv, runs=True)
  te = data.load("mnist", "test", a.data_dir)
  preds = table2.predictors(a.models_dir, cfg["models"])
  sets, rows, dist = {}, {}, {}
  for n in cfg["models"]:
    cache = common.adv_cache(a.runs, "table34", n, a.quick)
    sets[n] = table1.adversarial_set(os.path.join(a.models_dir, n), te, cfg,
                                     cache, not a.no_progress)
    ok = sets[n]["success"].astype(bool)
    rows[n] = (sets[n]["x_adv"][ok], sets[n]["label"][ok])
    dist[n] = float(sets[n]["distortion"][ok].mean())
  t3, md3 = table3(sets)
  noise, ndist = table2.noise_rows(preds, te, cfg)
  amp = {}
  for n, s in sets.items():
    ok = s["success"].astype(bool)
    xa = evaluate.amplify(te.x[s["index"][ok]], s["r"][ok], cfg["amplify"])
    amp[f"{n} amplified"] = (xa, s["label"][ok])
    dist[f"{n} amplified"] = float(evaluate.distortion(xa - te.x[s["index"][ok]]).mean())
  small, *large = list(noise)  # the paper's layout: smallest σ, amplified, the rest
  order = list(rows) + [small] + list(amp) + large
  allsets = {**rows, **noise, **amp}
  m4 = evaluate.error_matrix(preds, {k: allsets[k] for k in order})
  dist.update(ndist)
  md4 = evaluate.markdown_matrix(m4, config.PAPER4, {k: f"{dist[k]:.3f}" for k in order})
  md = (f"## Table 3\n\n{md3}\n## Table 4 (cells: ours (paper))\n\n{md4}\n"
        "Amplified distortions are below 0.1 where clipping to [0,1] cuts the "
        "rescaled perturbation.\n")
  common.write_results(res_dir, {"table3": t3, "table4": m4, "distortion": dist},
                       md, "Tables 3–4: cross-training-set generalisation", argv)
  print(md)
  return {"table3": t3, "table4": m4}


if __name__ == "__main__":
  main()
