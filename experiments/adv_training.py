"""Adversarial training vs weight decay vs dropout; see configs/adv_training.py.

Each variant trains into --out/<variant>/ (resumable per epoch; the pool itself
is rebuilt after an interrupt) and is skipped once its checkpoint exists.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from advjax import advtrain, attacks, checkpoint, data, models, train  # noqa: E402
from experiments import common  # noqa: E402
from experiments.configs import adv_training as config  # noqa: E402


def train_variant(name: str, v: dict, cfg: dict, tr, te, out: str, progress: bool):
  """Trains (or loads) one variant; returns (model, params, train s, test error)."""
  folder = os.path.join(out, name.replace(" ", "_").replace("(", "").replace(")", ""))
  if os.path.exists(os.path.join(folder, checkpoint.META)):
    m, p, meta = checkpoint.load(folder)
    return m, p, meta.get("train_seconds"), meta["errors"]["test"]
  model = models.get_model(cfg["model"], dropout=v["dropout"])
  aug = advtrain.pool_augment(model, v["pool"]) if v["pool"] else None
  t0 = time.time()
  res = train.train(model, tr, cfg["train"], ckpt_dir=folder, augment=aug,
                    progress=progress)
  secs = round(time.time() - t0, 1)
  err = train.error_rate(model, res.params, te.x, te.y)
  checkpoint.save(folder, model, res.params,
                  {"variant": name, "train_seconds": secs, "errors": {"test": err}},
                  dropout=v["dropout"])
  return model, res.params, secs, err


def min_distortion(model, params, te, cfg: dict) -> dict:
  """Success and mean minimum distortion on n_eval correctly classified test images."""
  idx = np.random.default_rng(cfg["seed"]).permutation(len(te.x))[: 2 * cfg["n_eval"]]
  idx = idx[train.predict(model, params, te.x[idx]) == te.y[idx]][: cfg["n_eval"]]
  t = np.asarray(attacks.random_targets(jax.random.PRNGKey(cfg["seed"]), te.y[idx],
                                        model.num_classes))
  res = attacks.lbfgs(common.logits_fn(model, params), te.x[idx], t, **cfg["eval_attack"])
  ok = np.asarray(res.success)
  return {"success": float(ok.mean()),
          "mean_distortion": float(np.asarray(res.distortion)[ok].mean())}


def main(argv=None) -> dict:
  a, cfg, res_dir = common.parse(__doc__, "adv_training", config, argv,
                                 models=False, out="runs/advtrain")
  tr, te = data.load("mnist", "train", a.data_dir), data.load("mnist", "test", a.data_dir)
  if cfg["n_train"]:
    tr = data.subset(tr, np.arange(cfg["n_train"]))
    te = data.subset(te, np.arange(cfg["n_train"]))
  rows = []
  for name, v in cfg["variants"].items():
    model, params, secs, err = train_variant(name, v, cfg, tr, te, a.out,
                                             not a.no_progress)
    rows.append(dict(variant=name, test_err=err,
                     train_seconds=secs, **min_distortion(model, params, te, cfg)))
    md = ["| FC100-100-10 trained with | test error | av. min distortion | "
          "attack success | train time |", "| --- " * 5 + "|"]
    md += [f"| {r['variant']} | {100 * r['test_err']:.2f}% | {r['mean_distortion']:.4f} "
           f"| {100 * r['success']:.0f}% | {r['train_seconds']} s |" for r in rows]
    md_txt = "\n".join(md) + ("\n\nPaper (60k training images): weight decay 1.6%, "
                              "dropout ≈1.3%, adversarial pool < 1.2%.\n")
    common.write_results(res_dir, {"rows": rows}, md_txt, "Adversarial training", argv)
  print(md_txt)
  return {"rows": rows}


if __name__ == "__main__":
  main()
