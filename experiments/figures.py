"""Figures of adversarial examples and noise digits; see configs/figures.py."""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from advjax import attacks, checkpoint, data, evaluate, train  # noqa: E402
from experiments import common, plots  # noqa: E402
from experiments.configs import figures as config  # noqa: E402


def noise_like(key, x, target_rms: np.ndarray) -> np.ndarray:
  """Gaussian noise whose per-pixel RMS after clipping matches `target_rms`."""
  z = np.asarray(jax.random.normal(key, x.shape))
  lo, hi = np.zeros(len(x)), np.full(len(x), 2.0)
  shape = (-1,) + (1,) * (x.ndim - 1)
  for _ in range(30):  # bisection on σ: clipping makes RMS(σ) sublinear
    mid = (lo + hi) / 2
    d = evaluate.distortion(np.clip(x + mid.reshape(shape) * z, 0, 1) - x)
    lo, hi = np.where(d < target_rms, mid, lo), np.where(d < target_rms, hi, mid)
  return np.clip(x + hi.reshape(shape) * z, 0, 1).astype(np.float32)


def examples(folder: str, ds, cfg: dict) -> dict:
  """Adversarial examples with random targets on correctly classified test images."""
  model, params, _ = checkpoint.load(folder)
  rng = np.random.default_rng(cfg["seed"])
  n = cfg["n_noise_conv"] if model.name == "conv" else cfg["n_noise"]
  order = rng.permutation(len(ds.x))[:n]
  order = order[train.predict(model, params, ds.x[order]) == ds.y[order]]
  key = jax.random.PRNGKey(cfg["seed"])
  t = np.asarray(attacks.random_targets(key, ds.y[order], model.num_classes))
  res = attacks.lbfgs(common.logits_fn(model, params), ds.x[order], t, **cfg["attack"])
  ok = np.asarray(res.success)  # only successful examples are shown and matched
  noisy = noise_like(jax.random.fold_in(key, 1), ds.x[order[ok]],
                     np.asarray(res.distortion)[ok])
  return {"model": model, "params": params, "idx": order[ok], "res": res,
          "x_adv": np.asarray(res.x_adv)[ok], "noisy": noisy,
          "noise_err": float(np.mean(
              train.predict(model, params, noisy) != ds.y[order[ok]]))}


def main(argv=None) -> dict:
  a, cfg, res_dir = common.parse(__doc__, "figures", config, argv)
  te = data.load("mnist", "test", a.data_dir)
  rows, noise_rows, out = {}, {}, {}
  for name in cfg["models"]:
    e = examples(os.path.join(a.models_dir, name), te, cfg)
    res, k = e["res"], cfg["per_model"]
    adv_pred = train.predict(e["model"], e["params"], e["x_adv"][:k])
    noise_pred = train.predict(e["model"], e["params"], e["noisy"][:k])
    idx = e["idx"][:k]
    rows[name] = [{"x": te.x[i], "x_adv": e["x_adv"][j],
                   "label": int(te.y[i]), "pred": int(adv_pred[j])}
                  for j, i in enumerate(idx)]
    noise_rows[name] = [{"x": te.x[i], "x_adv": e["noisy"][j], "label": int(te.y[i]),
                         "pred": int(noise_pred[j])} for j, i in enumerate(idx)]
    ok = np.asarray(res.success)
    out[name] = {"n": int(len(ok)), "success": float(ok.mean()),
                 "mean_distortion": float(np.asarray(res.distortion)[ok].mean()),
                 "noise_error_same_distortion": e["noise_err"]}
  plots.adversarial_rows(rows, os.path.join(res_dir, "adversarial_examples.png"))
  plots.adversarial_rows(noise_rows, os.path.join(res_dir, "noise_same_distortion.png"),
                         third="Gaussian noise of the same RMS")
  md = ["| model | success | mean distortion | error of Gaussian noise at the same "
        "distortion |", "| --- " * 4 + "|"]
  md += [f"| {n} | {100 * v['success']:.1f}% ({v['n']}) | {v['mean_distortion']:.4f} "
         f"| {100 * v['noise_error_same_distortion']:.1f}% |" for n, v in out.items()]
  common.write_results(res_dir, {"models": out}, "\n".join(md) + "\n",
                       "Figures: adversarial examples vs noise of equal distortion", argv)
  print("\n".join(md))
  return out


if __name__ == "__main__":
  main()
