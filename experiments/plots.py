"""Figures of §4.2: distortion histograms and rows of adversarial examples."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str) -> None:
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
  _save(fig, path)


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
      rms = np.sqrt(np.mean((xa - x) ** 2))
      for a, im, t in zip(ax_row[3 * j:3 * j + 3],
                          (x, np.clip(0.5 + magnify * (xa - x), 0, 1), xa),
                          (f"label {r['label']}", f"r×{magnify:g} ({rms:.3f})",
                           f"pred {r['pred']}")):
        a.imshow(im, cmap="gray", vmin=0, vmax=1)
        a.set_title(t, fontsize=6)
    ax_row[0].text(-0.15, 0.5, name, transform=ax_row[0].transAxes, ha="right",
                   va="center", fontsize=8)
  fig.suptitle(f"original | perturbation ×{magnify:g} (RMS) | {third}", fontsize=9)
  _save(fig, path)
