"""Certified training as published (LMT, GloRo), measured by both ends of the
bracket; see configs/certified_training.py.

Each cell (recipe, seed) trains into <runs>/certified_training/seed<s>/<cell>/
(resumable per epoch: the parameters, the optimiser, the power iteration and
the schedule's epoch), is measured (the attack and each certificate cached
there by the job engine, resumable per batch) and writes row.json; a rerun
reads finished cells back.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from advjax import certtrain, checkpoint, evaluate, inputs, models, train
from advjax.runs import driver, jobs
from experiments import common, plots
from experiments.configs import certified_training as config

FIELDS = ("clean_acc", "median_ratio", "seconds_per_epoch")


def fit(cfg: config.Config, cell: config.Cell, s: int, tr, folder: str):
  """Trains one cell into `folder` (resumable), or loads it: (model, params, meta)."""
  tc = dataclasses.replace(cell.train, seed=cell.train.seed + 100 * s)
  recipe = cell.recipe._replace(seed=cell.recipe.seed + 100 * s)
  want = common.plain({"config": tc, "n_train": len(tr.x), "recipe": recipe,
                       "model": cell.model})
  if os.path.exists(os.path.join(folder, checkpoint.META)):
    model, params, meta = checkpoint.load(folder)
    checkpoint.check_matches(folder, meta, want, repr(cell.name),
                             checkpoint.defaults_of({"config": tc, "recipe": recipe}))
    return model, params, meta
  model = models.get_model(cell.model)
  t0 = time.time()
  res = train.train(model, tr, tc, ckpt_dir=folder, extra=certtrain.extra_loss(model, recipe),
                    progress=cfg.progress)
  meta = dict(want, cell=cell.name, train_seconds=round(time.time() - t0, 1))
  checkpoint.save(folder, model, res.params, meta)
  return model, res.params, checkpoint.read_meta(folder)


def collapsed(pred: np.ndarray, acc: float) -> bool:
  """A net that learnt nothing: clean accuracy below 20% or one label for all."""
  return acc < config.COLLAPSED or len(np.unique(pred)) == 1


def measure(cfg: config.Config, cell: config.Cell, model, params, te, folder: str) -> dict:
  """Clean accuracy, certified (max over the cell's certificates) and attacked
  accuracy at each ε, the median ρ/d; refuses a radius above the attack's."""
  pred = np.asarray(models.predict(model, params, te.x))
  acc = float(np.mean(pred == te.y))
  row = {"clean_acc": acc, "collapsed": collapsed(pred, acc)}
  if row["collapsed"]:
    return row  # never counted as certified
  x, y = te.x[:cfg.n_images], te.y[:cfg.n_images].astype(np.int32)
  pb = inputs.problem((model.apply, params), x, label=y, check_logits=False)
  run = lambda job, name: driver.execute(
      job, pb, os.path.join(folder, name), batch_size=cfg.batch_size, progress=cfg.progress)
  adv = run(jobs.attack(cfg.attack, targeted=False), "attack")
  radii = {}
  for opts in cell.certify:
    name = opts.method + ("+floor" if opts.lipschitz_floor else "")
    radii[name] = run(jobs.certify(opts), name)["l2"]
  rho = np.max(np.stack(list(radii.values())), 0)
  correct = pred[:len(x)] == y
  d = np.where(adv["success"], adv["l2"], np.inf)
  evaluate.check_bracket(rho, d, folder)  # a violation is a bug: stop
  row["median_ratio"] = evaluate.median_ratio(rho, d, correct)
  row["methods"] = {k: float(np.median(v[correct])) if correct.any() else None
                    for k, v in radii.items()}
  for e in cfg.eps:
    row[f"certified@{e}"] = evaluate.certified_accuracy(rho, correct, e)
    row[f"attacked@{e}"] = evaluate.attacked_accuracy(d, correct, e)
  return row


def cell_folder(cfg: config.Config, name: str, s: int) -> str:
  """Where the cell `name` trains at seed s: <runs>/certified_training/seed<s>/<name>."""
  return os.path.join(cfg.runs_dir, "certified_training", f"seed{s}", name.replace(" ", "_"))


def run_cell(cfg: config.Config, cell: config.Cell, s: int, tr, te) -> dict:
  """Trains and measures one cell, or reads its finished row."""
  folder = cell_folder(cfg, cell.name, s)
  path = os.path.join(folder, "row.json")
  if not os.path.exists(path):
    model, params, meta = fit(cfg, cell, s, tr, folder)
    row = dict(cell=cell.name, seed=s, model=cell.model, note=cell.note,
               epochs=cell.train.epochs,
               seconds_per_epoch=meta["train_seconds"] / max(cell.train.epochs, 1),
               **measure(cfg, cell, model, params, te, folder))
    common.dump_json(path, row)
  return common.read_json(path)


def run(cfg: config.Config, workdir: str) -> dict:
  """Every selected cell in order; the table and figure rewritten after each."""
  names = cfg.selected([c.name for c in cfg.cells])  # fails before any work
  fields = FIELDS + tuple(f"{w}@{e}" for w in ("certified", "attacked") for e in cfg.eps)
  tr, te = common.load_data(cfg)
  rows: list[dict] = []

  def results():
    ok = [r for r in rows if not r.get("collapsed")]
    return {"rows": rows, "summary": common.summarize_rows(ok, "cell", fields),
            "collapsed": sorted({r["cell"] for r in rows if r.get("collapsed")}),
            "n_train_used": len(tr.x)}
  todo = [(c, s) for s in cfg.seeds for c in cfg.cells if c.name in names]
  for c, s in common.save_each(todo, workdir, cfg, config, markdown, results):
    rows.append(run_cell(cfg, c, s, tr, te))
    figure(results(), os.path.join(workdir, "figure.png"))
  return results()


def run_side(cells: tuple, folder: str, tag: str, n_images: int, seeds=(0,),
             progress: bool = True) -> dict:
  """A side study's cells (the scripts under experiments/results/): the committed
  config with these cells, n_images and seeds, data from $ADVJAX_DATA_DIR, results
  in folder/<tag> (tag gets "-seeds<s...>" unless seeds is (0,))."""
  cfg = dataclasses.replace(config.get_config(), cells=tuple(cells), n_images=n_images,
                            progress=progress, seeds=tuple(seeds),
                            data_dir=os.environ["ADVJAX_DATA_DIR"])
  tag += "" if tuple(seeds) == (0,) else "-seeds" + "".join(map(str, seeds))
  return run(cfg, os.path.join(folder, tag))


def publish(cfg: config.Config, cell_name: str, seed: int, name: str, info: dict) -> str:
  """Copies a finished cell's float32 weights to advjax/pretrained/<name>/ (for
  `models.pretrained`), its meta.json with the training config, the SHA-256, the
  cell's measured row and `info` (what, input, reproduce, status); returns the folder."""
  src = cell_folder(cfg, cell_name, seed)
  model, params, meta = checkpoint.load(src)
  row = common.read_json(os.path.join(src, "row.json"))
  measured = {k: v for k, v in row.items() if k in FIELDS or "@" in k}
  dest = os.path.join(os.path.dirname(models.__file__), "pretrained", name)
  checkpoint.save(dest, model, params, dict(
      meta, pretrained=dict(info, name=name, measured=measured, n_images=cfg.n_images)))
  return dest


def figure(results: dict, path: str) -> None:
  """Clean against certified accuracy at ε = 1.58, the published anchors ★."""
  plt = plots.plt
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for name, f in results["summary"].items():
    if "certified@1.58" in f:
      ax.plot(100 * f["certified@1.58"]["mean"], 100 * f["clean_acc"]["mean"], "o", label=name)
  for name, (clean, cert) in config.ANCHORS.items():
    if clean is None:  # certified accuracy published alone: a vertical line
      ax.axvline(cert, color="k", ls=":", lw=0.8)
      ax.annotate(name, (cert, 0.02), xycoords=("data", "axes fraction"), fontsize=7)
      continue
    ax.plot(cert, clean, "k*", ms=8)
    ax.annotate(name, (cert, clean), fontsize=7, xytext=(3, 3), textcoords="offset points")
  ax.set(xlabel="certified accuracy at L2 ε = 1.58 (%)", ylabel="clean accuracy (%)",
         title="Certified training (collapsed nets left out)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  plots.save(fig, path)


def markdown(results: dict, cfg: config.Config) -> str:
  """results.md: mean ± sd over seeds per cell; collapsed cells named apart."""
  fmt = common.mean_sd
  eps = [f"{w} ε={e}" for w in ("cert.", "att.") for e in cfg.eps]
  lines = ["| cell | seeds | clean acc % | median ρ/d | s/epoch | " + " | ".join(eps) + " |",
           "|" + " --- |" * (5 + len(eps))]
  for name, f in results["summary"].items():
    acc = " | ".join(fmt(f, f"{w}@{e}", 100, 1) for w in ("certified", "attacked")
                     for e in cfg.eps)
    lines.append(f"| {name} | {f['clean_acc']['n']} | {fmt(f, 'clean_acc', 100)} | "
                 f"{fmt(f, 'median_ratio', 1, 3)} | {fmt(f, 'seconds_per_epoch', 1, 0)} | {acc} |")
  dead = results.get("collapsed") or []
  anchors = config.anchors_text()
  return ("Accuracies (%) over the first test images (certified: correct and ρ ≥ ε, ρ the "
          "max of the cell's certificates; attacked: correct and d > ε); clean accuracy "
          "on all test images.\n\n" + "\n".join(lines)
          + (f"\n\nCollapsed (constant or < 20% clean accuracy; not certified): "
             f"{', '.join(dead)}." if dead else "")
          + f"\n\nAnchors (clean / certified at ε = 1.58): {anchors}.\n"
          "\n![clean against certified accuracy](figure.png)\n")


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
