"""Units vs random directions of φ(x), measured (§3); see configs/unit_analysis.py.

For each (model, layer): the top-k MNIST test images of every natural-basis
unit e_i and of as many random unit-norm Gaussian directions v; the coherence
of each top-k set (label purity, pair label agreement, mean pairwise cosine in
another network's centred feature space and in centred pixel space) against a
null of random k-sets; bootstrap 95% CIs and a permutation test of
units − random. Writes PNG grids like the paper's Figures 1–2, a summary
figure, config.json, results.json and results.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib

import jax
import matplotlib
import numpy as np
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

if __package__ in (None, ""):  # run as a script: make `experiments` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
from advjax import checkpoint, data, models, units
from experiments import common
from experiments.configs import unit_analysis as config

MEASURES = {"purity": "label purity (majority share)",
            "agreement": "pair label agreement",
            "cos_other": "cosine, other net's features (centred)",
            "cos_pixels": "cosine, pixels (centred)"}
GROUPS = ("units", "random", "null")


def load_nets(cfg: config.Config, models_dir: str) -> dict:
  """(name, init) -> (model, params, source); init=True: the untrained control.

  Checkpoints are required in the full size; the quick size falls back to
  random-init parameters when a checkpoint is missing.
  """
  keys = sorted({(a.model, a.init) for a in cfg.analyses}
                | {(a.other, False) for a in cfg.analyses})
  nets = {}
  for name, init in keys:
    key = jax.random.PRNGKey(zlib.crc32(name.encode()) + cfg.seed)
    folder = os.path.join(models_dir, name)
    if init:
      model = models.get_model(name)
      nets[name, init] = (model, model.init(key),
                          "random-init (untrained control)")
    elif os.path.exists(os.path.join(folder, checkpoint.META)):
      model, params, _ = checkpoint.load(folder)
      nets[name, init] = (model, params, folder)
    elif cfg.quick:
      model = models.get_model(name)
      nets[name, init] = (model, model.init(key),
                    "random-init")
    else:
      raise FileNotFoundError(
          f"no checkpoint {folder!r}; train it with experiments/train_models.py "
          "or pass --models-dir (or --quick for random-init models).")
  return nets


def group_values(t: units.TopK, n_units: int, k: int, null: np.ndarray,
                 y: np.ndarray, embs: dict) -> tuple[dict, dict]:
  """Per group, the measures of its unique top-k sets; and the counts left out."""
  ok = units.unique_sets(t, k)
  idx = {"units": t.index[:n_units, :k][ok[:n_units]],
         "random": t.index[n_units:, :k][ok[n_units:]], "null": null}
  out = {}
  for g, ix in idx.items():
    coh = units.coherence(ix, y)
    out[g] = {"purity": coh.purity, "agreement": coh.agreement,
              **{m: units.pairwise_cosine(ix, e) for m, e in embs.items()}}
  left_out = {"units": int(n_units - ok[:n_units].sum()),
              "random": int(len(ok) - n_units - ok[n_units:].sum())}
  return out, left_out


def compare(vals: dict, cfg: config.Config) -> dict:
  """Bootstrap CIs per group and the permutation p of units − random."""
  res = {}
  for m in MEASURES:
    r = {g: dict(units.bootstrap_ci(vals[g][m], cfg.seed, cfg.n_boot)._asdict(),
                 n=len(vals[g][m])) for g in GROUPS if len(vals[g][m])}
    if "units" in r and "random" in r:
      r["units_minus_random"] = r["units"]["mean"] - r["random"]["mean"]
      r["p_perm"] = units.permutation_test(vals["units"][m], vals["random"][m],
                                           cfg.seed, cfg.n_perm)
      # Whole distributions, not only means (ties make KS conservative).
      r["p_ks"] = float(stats.ks_2samp(vals["units"][m], vals["random"][m]).pvalue)
    res[m] = r
  return res


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
    vals, left_out = group_values(t, d, k, null, ds.y, embs)
    per_k[str(k)] = {"left_out": left_out, "stats": compare(vals, cfg)}
    if values is None:  # per-set values of the first k, for re-analysis
      values = {g: {m: np.round(v, 4) for m, v in vs.items()}
                for g, vs in vals.items() if g != "null"}
  return {"model": a.model + (" (untrained)" if a.init else ""),
          "layer": a.layer, "units": d, "random": n_r,
          "params": source, "judge": f"{a.other}/{a.other_layer}",
          "top_k_seconds": round(seconds, 2), "per_k": per_k,
          f"values_k{cfg.ks[0]}": values}, t


def grid(ax_rows, ds: data.Dataset, t: units.TopK, rows: np.ndarray, k: int,
         names: list[str]) -> None:
  """Draws rows of top-k images into a (len(rows), k) array of axes."""
  for r, (d, name) in enumerate(zip(rows, names)):
    ix = t.index[d, :k]
    pur = units.label_purity(ix[None], ds.y)[0]
    for c, j in enumerate(ix):
      ax = ax_rows[r, c]
      ax.imshow(ds.x[j, :, :, 0], cmap="gray", vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(str(ds.y[j]), fontsize=8, pad=2)
      if c == 0:
        ax.set_ylabel(f"{name}\npurity {pur:.2f}", fontsize=8, rotation=0,
                      ha="right", va="center")


def figure_grid(path: str, res: dict, t: units.TopK, ds: data.Dataset,
                cfg: config.Config) -> dict:
  """Figures 1–2 of the paper side by side; rows drawn at random, not chosen."""
  k, d, n = cfg.ks[0], res["units"], cfg.fig_rows
  ok = units.unique_sets(t, k)
  rng = np.random.default_rng(cfg.seed)
  u_ok = np.flatnonzero(ok[:d])
  r_ok = d + np.flatnonzero(ok[d:])
  u_rows = np.sort(rng.choice(u_ok, min(n, len(u_ok)), replace=False))
  r_rows = r_ok[:n]
  fig, axes = plt.subplots(n, 2 * k + 1, figsize=(0.9 * (2 * k + 1) + 1.6,
                                                    1.1 * n + 0.9),
                           squeeze=False,
                           gridspec_kw={"width_ratios": [1] * k + [1.3] + [1] * k})
  for ax in axes[:, k]:
    ax.axis("off")
  grid(axes[:, :k], ds, t, u_rows, k, [f"unit {i}" for i in u_rows])
  grid(axes[:, k + 1:], ds, t, r_rows, k, [f"dir. {i - d}" for i in r_rows])
  for ax in axes.ravel():
    if not ax.images:
      ax.axis("off")
  fig.suptitle(f"{res['model']} / {res['layer']}: top-{k} MNIST test images "
               "per direction (label above each image)", fontsize=11)
  top, half = 1 - 0.55 / (n + 1), 0.9 * (k / 2) / (2 * k + 1.3)
  fig.text(0.09 + half, top,
           "(a) natural-basis units e_i (units drawn at random; cf. Fig. 1)",
           ha="center", fontsize=10)
  fig.text(0.99 - half, top,
           "(b) random unit-norm directions v (cf. Fig. 2)", ha="center",
           fontsize=10)
  fig.subplots_adjust(left=0.09, right=0.99, bottom=0.02, top=1 - 0.9 / (n + 1),
                      wspace=0.08, hspace=0.3)
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return {"units": u_rows.tolist(), "random": (r_rows - d).tolist()}


def short(r: dict) -> str:
  """A short axis label of one analysis, e.g. 'FC100 sigmoid2'."""
  name = r["model"].replace("-100-10", "").replace("-200-10", "")
  return f"{name.replace(' (untrained)', '')}\n{r['layer']}" + (
      "\n(untrained)" if "untrained" in name else "")


def figure_summary(path: str, results: list[dict], k: int) -> None:
  """Mean and 95% CI of each measure: units, random directions, null."""
  fig, axes = plt.subplots(2, 2, figsize=(max(10, 2.2 * len(results) + 1.5), 8))
  colors = {"units": "tab:blue", "random": "tab:orange", "null": "tab:gray"}
  for ax, (m, title) in zip(axes.ravel(), MEASURES.items()):
    for g_i, g in enumerate(GROUPS):
      xs, ys, err = [], [], [[], []]
      for i, r in enumerate(results):
        s = r["per_k"][str(k)]["stats"][m].get(g)
        if s:
          xs.append(i + (g_i - 1) * 0.27)
          ys.append(s["mean"])
          err[0].append(s["mean"] - s["lo"])
          err[1].append(s["hi"] - s["mean"])
      label = {"units": "units e_i", "random": "random directions v",
               "null": "null: random k-sets"}[g]
      ax.bar(xs, ys, 0.27, yerr=err, capsize=2, color=colors[g], label=label)
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels([short(r) for r in results], fontsize=8)
    ax.set_title(title, fontsize=10)
  axes[0, 0].legend(fontsize=8, loc="upper right")
  fig.suptitle(f"Coherence of the top-{k} MNIST test images per direction\n"
               "(mean, 95% bootstrap CI)", fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def figure_ecdf(path: str, results: list[dict], k: int,
                measures=("purity", "cos_other"), cols: int = 4) -> None:
  """Empirical CDFs over directions: units vs random directions, per layer."""
  blocks = -(-len(results) // cols)
  fig, axes = plt.subplots(len(measures) * blocks, cols, squeeze=False,
                           figsize=(3.2 * cols, 2.6 * len(measures) * blocks))
  for ax in axes.ravel()[len(results) * len(measures):]:
    ax.axis("off")
  for j, r in enumerate(results):
    vals, st = r[f"values_k{k}"], r["per_k"][str(k)]["stats"]
    for i, m in enumerate(measures):
      ax = axes[(j // cols) * len(measures) + i, j % cols]
      for g, c in (("units", "tab:blue"), ("random", "tab:orange")):
        v = np.sort(vals[g][m])
        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", color=c,
                label=g)
      ax.axvline(st[m]["null"]["mean"], color="tab:gray", ls="--",
                 label="null mean")
      ax.set_title(f"{short(r).replace(chr(10), ' ')}: KS p="
                   f"{st[m].get('p_ks', np.nan):.3g}", fontsize=8)
      ax.set_xlabel(MEASURES[m], fontsize=8)
      ax.tick_params(labelsize=7)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f"Distribution over directions of top-{k} coherence (ECDF)",
               fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def table(results: list[dict], k: int) -> str:
  """Markdown table of one k: every measure, units vs random vs null."""
  lines = [f"### top-{k} sets\n",
           "| model / layer (judge) | measure | units e_i (n) | random v (n) | "
           "null (random k-sets) | units − random | p (perm.) | p (KS) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in results:
    for m, title in MEASURES.items():
      s = r["per_k"][str(k)]["stats"][m]
      cell = lambda g: (f"{s[g]['mean']:.3f} [{s[g]['lo']:.3f}, {s[g]['hi']:.3f}]"
                        f" ({s[g]['n']})" if g in s else "–")
      diff = (f"{s['units_minus_random']:+.3f}" if "p_perm" in s else "–")
      p = f"{s['p_perm']:.4f} | {s['p_ks']:.4f}" if "p_perm" in s else "– | –"
      lines.append(f"| {r['model']} / {r['layer']} ({r['judge']}) | {title} | "
                   f"{cell('units')} | {cell('random')} | {cell('null')} | "
                   f"{diff} | {p} |")
  return "\n".join(lines) + "\n"


def markdown(results: list[dict], cfg: config.Config, n_images: int) -> str:
  """results.md: the paper's (absent) number, then our tables."""
  head = (f"Paper (§3, Figures 1–4): pictures only, no number. Here: I = the "
          f"first {n_images} MNIST test images; all units of each layer and as "
          "many random unit-norm Gaussian directions; null = "
          f"{cfg.n_null} random k-sets. Mean [95% bootstrap CI] (n sets); "
          f"p: two-sided permutation test of units − random ({cfg.n_perm} "
          "permutations). Directions whose top-k set is not unique (tie at "
          "rank k, e.g. dead ReLU units) are left out:\n\n")
  left = "\n".join(
      f"- {r['model']}/{r['layer']}: {r['units']} units ({r['params']}); left "
      f"out at k={k}: " + ", ".join(f"{g} {r['per_k'][str(k)]['left_out'][g]}"
                                    for g in ("units", "random"))
      for r in results for k in cfg.ks[:1])
  return head + left + "\n\n" + "\n".join(table(results, k) for k in cfg.ks)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--models-dir", default="runs/models",
                 help="folder of checkpoints <models-dir>/<model name>/")
  p.add_argument("--data-dir", default=None,
                 help="MNIST IDX folder (default $ADVJAX_DATA_DIR)")
  p.add_argument("--results", default=None, help="output folder")
  p.add_argument("--quick", action="store_true", help="seconds-sized run")
  a = p.parse_args(argv)
  cfg = config.get_config(a.quick)
  out = a.results or os.path.join(
      "experiments", "results", ("quick/" if a.quick else "") + "unit_analysis")
  common.write_config(out, cfg, argv if argv is not None else sys.argv[1:])
  ds = data.load("mnist", "test", a.data_dir)
  if cfg.n_images:
    ds = data.subset(ds, np.arange(min(cfg.n_images, len(ds.x))))
  nets = load_nets(cfg, a.models_dir)
  t0, results, emb_cache = time.time(), [], {}
  for an in cfg.analyses:
    if (an.other, an.other_layer) not in emb_cache:
      m, prm, _ = nets[an.other, False]
      emb_cache[an.other, an.other_layer] = units.center(
          units.features(m, prm, ds.x, an.other_layer, cfg.batch_size))
    res, t = analyse(an, cfg, ds, nets, emb_cache[an.other, an.other_layer])
    res["figure"] = (f"topk_{an.model}_{an.layer}"
                     f"{'_untrained' if an.init else ''}.png")
    res["figure_rows"] = figure_grid(os.path.join(out, res["figure"]), res, t,
                                     ds, cfg)
    results.append(res)
  figure_summary(os.path.join(out, "coherence_summary.png"), results, cfg.ks[0])
  figure_ecdf(os.path.join(out, "coherence_ecdf.png"), results, cfg.ks[0])
  summary = {"config": cfg, "n_images": len(ds.x), "analyses": results,
             "wall_seconds": round(time.time() - t0, 1)}
  md = markdown(results, cfg, len(ds.x))
  common.write_results(out, summary, md,
                       "Units vs random directions (§3), measured", argv)
  print(md)
  return summary


if __name__ == "__main__":
  main()
