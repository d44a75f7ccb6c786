"""Figures of adversarial examples and noise digits; see configs/figures.py.

Adversarial sets (on test images, models of the first seed) are cached in
<runs>/adv/figures/seed<s>/<model>/.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from advjax import models, protocol
from experiments import common, plots, tables
from experiments.configs import figures as config

markdown = tables.figures  # results.md


def examples(cfg: config.Config, te, name: str) -> dict:
  """One model's adversarial examples and noise digits of the same RMS."""
  seed = cfg.seeds[0]
  model, params, _ = common.load_model(cfg, seed, name)
  n = cfg.n_noise_conv if model.name == "conv" else cfg.n_noise
  s = protocol.adversarial_set(model, params, te, n, cfg.seed,
                               common.cache_dir(cfg, "figures", seed, name, n),
                               cfg.attack, progress=cfg.progress)
  ok = s["success"].astype(bool)  # only successful examples are shown and matched
  idx, x_adv = s["index"][ok], s["x_adv"][ok]
  noisy = protocol.noise_like(jax.random.PRNGKey(cfg.seed + 1), te.x[idx],
                              s["distortion"][ok])
  k = cfg.per_model
  adv_pred = models.predict(model, params, x_adv[:k])
  noisy_pred = models.predict(model, params, noisy)
  rows = [{"x": te.x[i], "x_adv": x_adv[j], "label": int(te.y[i]),
           "pred": int(adv_pred[j])} for j, i in enumerate(idx[:k])]
  noise_rows = [{"x": te.x[i], "x_adv": noisy[j], "label": int(te.y[i]),
                 "pred": int(noisy_pred[j])} for j, i in enumerate(idx[:k])]
  summary = {"n": int(len(ok)), "success": float(ok.mean()),
             "mean_distortion": protocol.mean_distortion(s),
             "noise_error_same_distortion": float(np.mean(noisy_pred != te.y[idx]))}
  return {"rows": rows, "noise_rows": noise_rows, "summary": summary}


def run(cfg: config.Config, workdir: str) -> dict:
  """Figures 5/7-like rows and the noise-at-equal-distortion error per model."""
  names = cfg.selected(cfg.models)  # a bad --only fails before any work
  tr, te = common.load_data(cfg)
  out = {n: examples(cfg, te, n) for n in names}
  plots.adversarial_rows({n: e["rows"] for n, e in out.items()},
                         os.path.join(workdir, "adversarial_examples.png"))
  plots.adversarial_rows({n: e["noise_rows"] for n, e in out.items()},
                         os.path.join(workdir, "noise_same_distortion.png"),
                         third="Gaussian noise of the same RMS")
  return {"models": {n: e["summary"] for n, e in out.items()},
          "seeds": list(cfg.seeds[:1]), "n_train_used": len(tr.x)}


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
