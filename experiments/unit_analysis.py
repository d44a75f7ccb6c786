"""Units vs random directions of φ(x), measured (§3); see configs/unit_analysis.py.

For each (model, layer): the top-k MNIST test images of every natural-basis
unit e_i and of as many random unit-norm Gaussian directions v; the coherence
of each top-k set (label purity, pair label agreement, mean pairwise cosine in
another network's centred feature space and in centred pixel space) against a
null of random k-sets; bootstrap 95% CIs and a permutation test of
units − random. Writes PNG grids like the paper's Figures 1–2, a summary
figure, config.json, results.json and results.md. The method is
`advjax.units` (`group_values`, `compare`), the figures `experiments.plots`.
"""

from __future__ import annotations

import os
import time
import zlib

import jax
import numpy as np

from advjax import checkpoint, data, models, units
from experiments import common, plots
from experiments.configs import unit_analysis as config


def load_nets(cfg: config.Config, analyses) -> dict:
  """(name, init) -> (model, params, source); init=True: the untrained control.

  Checkpoints (of the first seed) are required in the full size; the quick
  size falls back to random-init parameters when a checkpoint is missing.
  """
  keys = sorted({(a.model, a.init) for a in analyses}
                | {(a.other, False) for a in analyses})
  nets = {}
  for name, init in keys:
    key = jax.random.PRNGKey(zlib.crc32(name.encode()) + cfg.seed)
    folder = os.path.join(cfg.models_dir(cfg.seeds[0]), name)
    if init or (cfg.quick and not os.path.exists(os.path.join(folder, checkpoint.META))):
      model = models.get_model(name)
      nets[name, init] = (model, model.init(key), "random-init (untrained control)"
                          if init else "random-init")
    else:
      model, params, _ = common.load_model(cfg, cfg.seeds[0], name)
      nets[name, init] = (model, params, folder)
  return nets


def analyse(a: config.Analysis, cfg: config.Config, ds: data.Dataset,
            nets: dict, other_emb: np.ndarray) -> tuple[dict, units.TopK]:
  """Top-k per unit and random direction of one layer, and the statistics."""
  model, params, source = nets[a.model, a.init]
  d = units.layer_dim(model, a.layer)
  n_r = cfg.n_random or d
  # One key per (model, layer), independent of the order of the analyses.
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed),
                           zlib.crc32(f"{a.model}/{a.layer}".encode()) >> 1)
  V = np.concatenate([units.natural_basis(d),
                      units.random_directions(key, n_r, d)])
  t0 = time.time()
  t = units.top_k(model, params, ds.x, a.layer, V, max(cfg.ks) + 1,
                  cfg.batch_size)
  seconds = time.time() - t0
  embs = {"cos_other": other_emb,
          "cos_pixels": units.center(ds.x.reshape(len(ds.x), -1))}
  per_k, values = {}, None
  for k in cfg.ks:
    null = units.random_sets(cfg.seed + k, cfg.n_null, k, len(ds.x))
    vals, left_out = units.group_values(t, d, k, null, ds.y, embs)
    per_k[str(k)] = {"left_out": left_out,
                     "stats": units.compare(vals, cfg.seed, cfg.n_boot, cfg.n_perm)}
    if values is None:  # per-set values of the first k, for re-analysis
      values = {g: {m: np.round(v, 4) for m, v in vs.items()}
                for g, vs in vals.items() if g != "null"}
  return {"model": a.model + (" (untrained)" if a.init else ""),
          "layer": a.layer, "units": d, "random": n_r,
          "params": source, "judge": f"{a.other}/{a.other_layer}",
          "top_k_seconds": round(seconds, 2), "per_k": per_k,
          f"values_k{cfg.ks[0]}": values}, t


def table(results: list[dict], k: int) -> str:
  """Markdown table of one k: every measure, units vs random vs null."""
  lines = [f"### top-{k} sets\n",
           "| model / layer (judge) | measure | units e_i (n) | random v (n) | "
           "null (random k-sets) | units − random | p (perm.) | p (KS) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in results:
    for m, title in units.MEASURES.items():
      s = r["per_k"][str(k)]["stats"][m]
      cell = lambda g: (f"{s[g]['mean']:.3f} [{s[g]['lo']:.3f}, {s[g]['hi']:.3f}]"
                        f" ({s[g]['n']})" if g in s else "–")
      diff = (f"{s['units_minus_random']:+.3f}" if "p_perm" in s else "–")
      p = f"{s['p_perm']:.4f} | {s['p_ks']:.4f}" if "p_perm" in s else "– | –"
      lines.append(f"| {r['model']} / {r['layer']} ({r['judge']}) | {title} | "
                   f"{cell('units')} | {cell('random')} | {cell('null')} | "
                   f"{diff} | {p} |")
  return "\n".join(lines) + "\n"


def run(cfg: config.Config, workdir: str) -> dict:
  """Every analysis of cfg (or of --only): statistics, grids, summary figures."""
  analyses = [a for a in cfg.analyses
              if a.key in cfg.selected([b.key for b in cfg.analyses])]
  ds = data.load(cfg.dataset, "test", cfg.data_dir)  # the paper: MNIST
  if cfg.n_test:
    ds = data.subset(ds, np.arange(min(cfg.n_test, len(ds.x))))
  nets = load_nets(cfg, analyses)
  t0, results, emb_cache = time.time(), [], {}
  for an in analyses:
    if (an.other, an.other_layer) not in emb_cache:
      m, prm, _ = nets[an.other, False]
      emb_cache[an.other, an.other_layer] = units.center(
          units.features(m, prm, ds.x, an.other_layer, cfg.batch_size))
    res, t = analyse(an, cfg, ds, nets, emb_cache[an.other, an.other_layer])
    res["figure"] = (f"topk_{an.model}_{an.layer}"
                     f"{'_untrained' if an.init else ''}.png")
    res["figure_rows"] = plots.unit_grid(
        os.path.join(workdir, res["figure"]), f"{res['model']} / {res['layer']}",
        t, ds.x, ds.y, res["units"], cfg.ks[0], cfg.fig_rows, cfg.seed)
    results.append(res)
  plots.coherence_summary(os.path.join(workdir, "coherence_summary.png"),
                          results, cfg.ks[0])
  plots.coherence_ecdf(os.path.join(workdir, "coherence_ecdf.png"), results,
                       cfg.ks[0])
  return {"n_images": len(ds.x), "analyses": results,
          "wall_seconds": round(time.time() - t0, 1)}


def markdown(results: dict, cfg: config.Config) -> str:
  """results.md: the paper's (absent) number, then our tables."""
  res, n_images = results["analyses"], results["n_images"]
  head = (f"Paper (§3, Figures 1–4): pictures only, no number. Here: I = the "
          f"first {n_images} MNIST test images; all units of each layer and as "
          "many random unit-norm Gaussian directions; null = "
          f"{cfg.n_null} random k-sets. Mean [95% percentile bootstrap CI] (n "
          "sets); p: two-sided permutation test of units − random (2 × the "
          f"smaller one-sided p, {cfg.n_perm} permutations, scipy.stats). "
          "Directions whose top-k set is not unique (tie at rank k, e.g. dead "
          "ReLU units) are left out:\n\n")
  left = "\n".join(
      f"- {r['model']}/{r['layer']}: {r['units']} units ({r['params']}); left "
      f"out at k={k}: " + ", ".join(f"{g} {r['per_k'][str(k)]['left_out'][g]}"
                                    for g in ("units", "random"))
      for r in res for k in cfg.ks[:1])
  return head + left + "\n\n" + "\n".join(table(res, k) for k in cfg.ks)


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
