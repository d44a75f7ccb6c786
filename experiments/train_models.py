"""Trains every Table 1 / Table 3 model and the conv net; see configs/train_models.py.

Writes checkpoints to --out/<folder>/ (params.msgpack, meta.json, resumable
state) and experiments/results/train_models[_<dataset>]/ with config.json,
results.json and results.md (errors beside the paper's). Finished models are
skipped on a rerun; an interrupted one resumes from its last epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time

import jax
import numpy as np

if __package__ in (None, ""):  # run as a script: make `experiments` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from advjax import checkpoint, data, models, train
from experiments import common
from experiments.configs import train_models as config


def load_data(cfg: dict, data_dir: str | None):
  """Train/test sets and the P1/P2 halves, shrunk in the quick size."""
  tr = data.load(cfg["dataset"], "train", data_dir)
  te = data.load(cfg["dataset"], "test", data_dir)
  if cfg["n_train"]:
    tr = data.subset(tr, np.arange(min(cfg["n_train"], len(tr.x))))
  if cfg["n_test"]:
    te = data.subset(te, np.arange(min(cfg["n_test"], len(te.x))))
  p1, p2 = data.halves(len(tr.x), cfg["split_seed"])
  return {"all": tr, "P1": data.subset(tr, p1), "P2": data.subset(tr, p2),
          "test": te}


def run_job(job: config.Job, sets: dict, out: str, progress: bool,
            dataset: str = "mnist") -> dict:
  """Trains one model (or loads it when finished); returns its error rates."""
  folder = os.path.join(out, job.folder)
  model = models.get_model(job.model)
  trained = not os.path.exists(os.path.join(folder, checkpoint.META))
  if not trained:  # finished earlier: evaluate, but keep its meta (provenance)
    model, params, meta = checkpoint.load(folder)
  else:
    t0 = time.time()
    params = None
    if job.ae_epochs:
      enc = train.pretrain_autoencoder(
          sets[job.half], dataclasses.replace(job.cfg, epochs=job.ae_epochs),
          lam=job.ae[0], beta=job.ae[1], rho=job.ae[2], progress=progress)
      params = model.init(jax.random.PRNGKey(job.cfg.seed))
      params = dict(params, code=enc.encoder)
    res = train.train(model, sets[job.half], job.cfg, params=params,
                      ckpt_dir=folder, progress=progress)
    params = res.params
    meta = {"half": job.half, "config": dataclasses.asdict(job.cfg),
            "decay": {L.name: L.decay for L in model.param_layers()},
            "train_seconds": round(time.time() - t0, 1),
            "data": {"dataset": dataset, **{k: len(v.x) for k, v in sets.items()}}}
  errs = {k: train.error_rate(model, params, v.x, v.y) for k, v in sets.items()
          if k != "all" or job.half == "all"}
  if trained:
    checkpoint.save(folder, model, params, dict(meta, errors=errs))
  return {"folder": job.folder, "model": model.name, "half": job.half,
          "errors": errs, "train_seconds": meta.get("train_seconds"),
          "num_params": models.num_params(params)}


def table(rows: list[dict], paper: dict) -> str:
  """Markdown table of errors (%), ours beside the paper's."""
  lines = ["| model | trained on | ours train/P1/P2/test err | paper |",
           "| --- | --- | --- | --- |"]
  for r in rows:
    e = r["errors"]
    ours = " / ".join(f"{k} {100 * v:.2f}%" for k, v in e.items())
    ptxt = " / ".join(f"{k} {v}%" for k, v in paper.get(r["folder"], {}).items()) or "–"
    lines.append(f"| {r['folder']} | {r['half']} | {ours} | {ptxt} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--out", default="runs/models", help="checkpoint folder")
  p.add_argument("--results", default=None, help="results folder")
  p.add_argument("--data-dir", default=None, help="IDX folder (or $ADVJAX_DATA_DIR)")
  p.add_argument("--dataset", default="mnist", choices=data.DATASETS)
  p.add_argument("--only", nargs="*", help="train only these folders")
  p.add_argument("--epochs", type=int, default=None, help="override every job's epochs")
  p.add_argument("--quick", action="store_true", help="seconds-sized run")
  p.add_argument("--no-progress", action="store_true")
  a = p.parse_args(argv)
  cfg = dict(config.get_config(a.quick), dataset=a.dataset)
  suffix = "" if a.dataset == "mnist" else f"_{a.dataset}"
  res_dir = a.results or os.path.join(
      "experiments", "results", ("quick/" if a.quick else "") + "train_models" + suffix)
  common.write_config(res_dir, cfg, argv if argv is not None else sys.argv[1:])
  sets = load_data(cfg, a.data_dir)
  jobs = [j for j in cfg["jobs"] if not a.only or j.folder in a.only]
  if a.epochs:
    jobs = [dataclasses.replace(j, cfg=dataclasses.replace(j.cfg, epochs=a.epochs))
            for j in jobs]
  paper = config.PAPER if a.dataset == "mnist" else {}
  t0, rows = time.time(), []
  for job in jobs:
    rows.append(run_job(job, sets, a.out, not a.no_progress, a.dataset))
    common.write_results(res_dir, {"rows": rows}, table(rows, paper),
                         "Train and test errors (§4.2, Tables 1 and 3)")
  out = {"rows": rows, "wall_seconds": round(time.time() - t0, 1),
         "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
  common.write_results(res_dir, out, table(rows, paper),
                       "Train and test errors (§4.2, Tables 1 and 3)")
  print(table(rows, paper))
  return out


if __name__ == "__main__":
  main()
