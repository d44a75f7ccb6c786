"""Trains every Table 1 / Table 3 model and the conv net; see configs/train_models.py.

Each seed index s writes checkpoints to <runs>/models/seed<s>/<folder>/
(params.msgpack, meta.json, resumable per-epoch state). Finished models are
loaded and evaluated, never retrained or re-saved; an interrupted one resumes
from its last epoch.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax

from advjax import autoencoder, checkpoint, data, models, train
from experiments import common, tables
from experiments.configs import train_models as config

markdown = tables.train_models  # results.md


def splits(cfg: config.Config) -> dict:
  """The training set, its disjoint halves P1/P2 and the test set."""
  tr, te = common.load_data(cfg)
  p1, p2 = data.halves(len(tr.x), cfg.split_seed)
  return {"all": tr, "P1": data.subset(tr, p1), "P2": data.subset(tr, p2), "test": te}


def seeded(job: config.Job, cfg: config.Config, s: int) -> config.Job:
  """The job of seed index s: training seed + stride·s, epochs override."""
  tc = dataclasses.replace(job.cfg, seed=job.cfg.seed + cfg.seed_stride * s)
  if cfg.epochs:
    tc = dataclasses.replace(tc, epochs=cfg.epochs)
  return dataclasses.replace(job, cfg=tc)


def train_job(job: config.Job, sets: dict, folder: str, progress: bool,
              dataset: str = "mnist"):
  """Trains one model (resuming from `folder`); returns (model, params, meta)."""
  model = models.get_model(job.model)
  t0, params = time.time(), None
  if job.ae_epochs:
    enc = autoencoder.pretrain(
        sets[job.half], dataclasses.replace(job.cfg, epochs=job.ae_epochs),
        lam=job.ae[0], beta=job.ae[1], rho=job.ae[2], progress=progress)
    params = dict(model.init(jax.random.PRNGKey(job.cfg.seed)), code=enc.encoder)
  res = train.train(model, sets[job.half], job.cfg, params=params,
                    ckpt_dir=folder, progress=progress)
  meta = {"half": job.half, "config": dataclasses.asdict(job.cfg),
          "decay": {L.name: L.decay for L in model.param_layers()},
          "train_seconds": round(time.time() - t0, 1),
          "data": {"dataset": dataset, **{k: len(v.x) for k, v in sets.items()}}}
  return model, res.params, meta


def check_finished(folder: str, meta: dict, job: config.Job, sets: dict,
                   dataset: str = "mnist") -> None:
  """Refuses a finished checkpoint trained with another config or data."""
  data = meta.get("data", {})
  got = {**meta.get("config", {}), "training images": data.get("all", len(sets["all"].x)),
         "dataset": data.get("dataset", "mnist")}
  want = {**dataclasses.asdict(job.cfg), "training images": len(sets["all"].x),
          "dataset": dataset}
  checkpoint.check_matches(folder, got, want, repr(job.model), checkpoint.defaults_of(job.cfg))


def run_job(job: config.Job, sets: dict, folder: str, progress: bool,
            dataset: str = "mnist") -> dict:
  """Trains (or loads, when finished) one model; returns its error rates."""
  done = os.path.exists(os.path.join(folder, checkpoint.META))
  if done:  # finished earlier: evaluate, but keep its meta (provenance)
    model, params, meta = checkpoint.load(folder)
    check_finished(folder, meta, job, sets, dataset)
  else:
    model, params, meta = train_job(job, sets, folder, progress, dataset)
  errs = {k: models.error_rate(model, params, v.x, v.y) for k, v in sets.items()
          if k != "all" or job.half == "all"}
  if not done:
    checkpoint.save(folder, model, params, dict(meta, errors=errs))
  return {"folder": job.folder, "model": model.name, "half": job.half,
          "train_seed": meta.get("config", {}).get("seed"), "errors": errs,
          "train_seconds": meta.get("train_seconds"),
          "num_params": models.num_params(params)}


def results(rows: list[dict], cfg: config.Config, n_train: int) -> dict:
  """Per-seed rows plus mean ± sd of every error per folder."""
  flat = [dict(r, **{f"err_{k}": v for k, v in r["errors"].items()}) for r in rows]
  fields = sorted({k for r in flat for k in r if k.startswith("err_")})
  return {"rows": rows, "summary": common.summarize_rows(flat, "folder", fields),
          "seeds": list(cfg.seeds), "n_train_used": n_train}


def run(cfg: config.Config, workdir: str) -> dict:
  """Trains every selected job for every seed; writes results after each."""
  names = cfg.selected([j.folder for j in cfg.jobs])  # fails before any work
  sets = splits(cfg)
  rows: list[dict] = []
  so_far = lambda: results(rows, cfg, len(sets["all"].x))
  items = [(s, j) for s in cfg.seeds for j in cfg.jobs if j.folder in names]
  for s, job in common.save_each(items, workdir, cfg, config, markdown, so_far):
    folder = os.path.join(cfg.models_dir(s), job.folder)
    rows.append(dict(run_job(seeded(job, cfg, s), sets, folder, cfg.progress,
                             cfg.dataset), seed=s))
  return so_far()


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
