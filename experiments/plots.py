"""All matplotlib figures: §4.2 distortion histograms and adversarial rows; §3
top-k image grids and coherence summaries."""

from __future__ import annotations

import os

try:
  import matplotlib
except ImportError as e:  # the core install has no matplotlib
  raise ImportError("the figures of experiments/ need matplotlib: "
                    "pip install 'advjax[experiments]'") from e

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from advjax import criteria, units  # noqa: E402


def save(fig, path: str) -> None:
  """Writes a figure (its folder made) and closes it."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)


def distortion_histograms(d: dict[str, np.ndarray], path: str) -> None:
  """One histogram of minimum distortions per model, on shared bins."""
  hi = max([float(v.max()) for v in d.values() if len(v)] + [1e-3])
  bins = np.linspace(0, hi, 40)
  fig, axes = plt.subplots(len(d), 1, figsize=(6, 1.6 * len(d)), sharex=True,
                           squeeze=False)
  for ax, (name, v) in zip(axes[:, 0], d.items()):
    ax.hist(v, bins=bins, color="tab:blue")
    if len(v):
      ax.axvline(v.mean(), color="tab:red", lw=1)
    ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    ax.set_yticks([])
  axes[-1, 0].set_xlabel("minimum distortion (per-pixel RMS); red: mean")
  save(fig, path)


def adversarial_rows(rows: dict[str, list[dict]], path: str,
                     magnify: float = 10.0, third: str = "adversarial") -> None:
  """Per model a row of (original, r ×magnify, adversarial) triplets (Fig. 5/7).

  `rows` maps a model name to dicts with x, x_adv (H, W[, 1]), label, pred.
  """
  k = max(len(v) for v in rows.values())
  fig, axes = plt.subplots(len(rows), 3 * k, figsize=(1.05 * 3 * k, 1.35 * len(rows)),
                           squeeze=False)
  for ax_row, (name, items) in zip(axes, rows.items()):
    for a in ax_row:
      a.axis("off")
    for j, r in enumerate(items):
      x, xa = np.squeeze(r["x"]), np.squeeze(r["x_adv"])
      rms = float(criteria.rms((xa - x)[None])[0])
      for a, im, t in zip(ax_row[3 * j:3 * j + 3],
                          (x, np.clip(0.5 + magnify * (xa - x), 0, 1), xa),
                          (f"label {r['label']}", f"r×{magnify:g} ({rms:.3f})",
                           f"pred {r['pred']}")):
        a.imshow(im, cmap="gray", vmin=0, vmax=1)
        a.set_title(t, fontsize=6)
    ax_row[0].text(-0.15, 0.5, name, transform=ax_row[0].transAxes, ha="right",
                   va="center", fontsize=8)
  fig.suptitle(f"original | perturbation ×{magnify:g} (RMS) | {third}", fontsize=9)
  save(fig, path)


# ----------------------------------------------------------------------------
# §3: top-k images per unit / random direction, and their coherence.

def _image_rows(ax_rows, x: np.ndarray, y: np.ndarray, index: np.ndarray,
                rows: np.ndarray, k: int, names: list[str]) -> None:
  """Draws rows of top-k images into a (len(rows), k) array of axes."""
  for r, (d, name) in enumerate(zip(rows, names)):
    ix = index[d, :k]
    pur = units.label_purity(ix[None], y)[0]
    for c, j in enumerate(ix):
      ax = ax_rows[r, c]
      ax.imshow(x[j, :, :, 0], cmap="gray", vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(str(y[j]), fontsize=8, pad=2)
      if c == 0:
        ax.set_ylabel(f"{name}\npurity {pur:.2f}", fontsize=8, rotation=0,
                      ha="right", va="center")


def unit_grid(path: str, title: str, t, x: np.ndarray, y: np.ndarray,
              n_units: int, k: int, n_rows: int, seed: int = 0) -> dict:
  """Figures 1–2 of the paper side by side; unit rows drawn at random, not chosen.

  `t` is a `units.TopK` over [units, random directions] (units first, width
  > k); returns the rows drawn {'units': [...], 'random': [...]}.
  """
  ok = units.unique_sets(t, k)
  rng = np.random.default_rng(seed)
  u_ok, r_ok = np.flatnonzero(ok[:n_units]), n_units + np.flatnonzero(ok[n_units:])
  u_rows = np.sort(rng.choice(u_ok, min(n_rows, len(u_ok)), replace=False))
  r_rows, n = r_ok[:n_rows], n_rows
  fig, axes = plt.subplots(
      n, 2 * k + 1, figsize=(0.9 * (2 * k + 1) + 1.6, 1.1 * n + 0.9),
      squeeze=False, gridspec_kw={"width_ratios": [1] * k + [1.3] + [1] * k})
  for ax in axes[:, k]:
    ax.axis("off")
  _image_rows(axes[:, :k], x, y, t.index, u_rows, k, [f"unit {i}" for i in u_rows])
  _image_rows(axes[:, k + 1:], x, y, t.index, r_rows, k,
              [f"dir. {i - n_units}" for i in r_rows])
  for ax in axes.ravel():
    if not ax.images:
      ax.axis("off")
  fig.suptitle(f"{title}: top-{k} MNIST test images per direction (label "
               "above each image)", fontsize=11)
  top, half = 1 - 0.55 / (n + 1), 0.9 * (k / 2) / (2 * k + 1.3)
  fig.text(0.09 + half, top,
           "(a) natural-basis units e_i (units drawn at random; cf. Fig. 1)",
           ha="center", fontsize=10)
  fig.text(0.99 - half, top, "(b) random unit-norm directions v (cf. Fig. 2)",
           ha="center", fontsize=10)
  fig.subplots_adjust(left=0.09, right=0.99, bottom=0.02, top=1 - 0.9 / (n + 1),
                      wspace=0.08, hspace=0.3)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return {"units": u_rows.tolist(), "random": (r_rows - n_units).tolist()}


def short_label(r: dict) -> str:
  """A short axis label of one §3 analysis, e.g. 'FC100\\nsigmoid2'."""
  name = r["model"].replace("-100-10", "").replace("-200-10", "")
  return f"{name.replace(' (untrained)', '')}\n{r['layer']}" + (
      "\n(untrained)" if "untrained" in name else "")


def coherence_summary(path: str, results: list[dict], k: int) -> None:
  """Mean and 95% CI of each §3 measure: units, random directions, null."""
  fig, axes = plt.subplots(2, 2, figsize=(max(10, 2.2 * len(results) + 1.5), 8))
  colors = {"units": "tab:blue", "random": "tab:orange", "null": "tab:gray"}
  labels = {"units": "units e_i", "random": "random directions v",
            "null": "null: random k-sets"}
  for ax, (m, title) in zip(axes.ravel(), units.MEASURES.items()):
    for g_i, g in enumerate(units.GROUPS):
      xs, ys, err = [], [], [[], []]
      for i, r in enumerate(results):
        s = r["per_k"][str(k)]["stats"][m].get(g)
        if s:
          xs.append(i + (g_i - 1) * 0.27)
          ys.append(s["mean"])
          err[0].append(s["mean"] - s["lo"])
          err[1].append(s["hi"] - s["mean"])
      ax.bar(xs, ys, 0.27, yerr=err, capsize=2, color=colors[g], label=labels[g])
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels([short_label(r) for r in results], fontsize=8)
    ax.set_title(title, fontsize=10)
  axes[0, 0].legend(fontsize=8, loc="upper right")
  fig.suptitle(f"Coherence of the top-{k} MNIST test images per direction\n"
               "(mean, 95% bootstrap CI)", fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def coherence_ecdf(path: str, results: list[dict], k: int,
                   measures=("purity", "cos_other"), cols: int = 4) -> None:
  """Empirical CDFs over directions (§3): units vs random directions, per layer."""
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
      ax.set_title(f"{short_label(r).replace(chr(10), ' ')}: KS p="
                   f"{st[m].get('p_ks', np.nan):.3g}", fontsize=8)
      ax.set_xlabel(units.MEASURES[m], fontsize=8)
      ax.tick_params(labelsize=7)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f"Distribution over directions of top-{k} coherence (ECDF)",
               fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
