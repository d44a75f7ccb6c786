"""Penalising the layer bounds and LMT, measured by both ends of the bracket;
see configs/lipschitz_training.py.

Each cell (variant, seed) trains into <runs>/lipschitz_training/seed<s>/<variant>/
(resumable per epoch, the power-iteration state included), is measured (the
attack and the certificate cached there by the job engine, resumable per
batch) and writes row.json; a rerun reads finished cells back.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from advjax import advtrain, checkpoint, evaluate, inputs, models, train
from advjax.certify.options import CertifyOptions
from advjax.norms import layers, regulariser
from advjax.runs import driver, jobs
from experiments import common, plots
from experiments.configs import lipschitz_training as config

FIELDS = ("test_err", "mean_l2", "mean_rms", "mean_radius", "bound_product",
          "empirical_lower", "train_seconds")


def cells(cfg: config.Config) -> list:
  """(variant, seed) of the screen, the finalists' seeds and the conv nets."""
  out = [(v, s) for s in cfg.seeds for v in cfg.variants]
  by_name = {v.name: v for v in cfg.variants}
  unknown = set(cfg.finalists + cfg.conv) - set(by_name)
  if unknown:
    raise ValueError(f"finalists/conv {sorted(unknown)} are not variants: {list(by_name)}.")
  out += [(by_name[n], s) for s in cfg.finalist_seeds for n in cfg.finalists]
  conv = [by_name[n]._replace(name=f"conv {n}", model="conv") for n in cfg.conv]
  return out + [(v, s) for s in cfg.conv_seeds for v in conv]


def fit(cfg: config.Config, v, s: int, tr, folder: str):
  """Trains one cell into `folder` (resumable), or loads it: (model, params, meta)."""
  tc = cfg.conv_train if v.model == "conv" else cfg.train
  tc = dataclasses.replace(tc, seed=tc.seed + 100 * s)
  reg = v.reg._replace(seed=v.reg.seed + 100 * s)
  pools = tuple(p._replace(seed=p.seed + 100 * s) for p in v.pools)
  want = common.plain(
      {"config": tc, "n_train": len(tr.x), "reg": reg, "pools": pools, "dropout": v.dropout})
  if os.path.exists(os.path.join(folder, checkpoint.META)):
    model, params, meta = checkpoint.load(folder)
    checkpoint.check_matches(folder, meta, want, repr(v.name),
                             checkpoint.defaults_of({"config": tc, "reg": reg}))
    return model, params, meta
  model = models.get_model(v.model, dropout=v.dropout)
  if pools:
    ex = advtrain.extra_loss(model, pools, tr, tc.batch_size)
  elif reg != regulariser.RegConfig(seed=reg.seed):
    ex = regulariser.extra_loss(model, reg)
  else:
    ex = None  # plain training: the same code path as train_models
  t0 = time.time()
  res = train.train(model, tr, tc, ckpt_dir=folder, extra=ex, progress=cfg.progress)
  meta = dict(want, variant=v.name, train_seconds=round(time.time() - t0, 1))
  checkpoint.save(folder, model, res.params, meta, dropout=v.dropout)
  return model, res.params, checkpoint.read_meta(folder)


def measure(cfg: config.Config, model, params, te, folder: str, conv: bool) -> dict:
  """Test error, both ends of the bracket, accuracies at ε, the Lipschitz bracket."""
  x, y = te.x[:cfg.n_images], te.y[:cfg.n_images].astype(np.int32)
  run = lambda job, name: driver.execute(
      job, pb, os.path.join(folder, name), batch_size=cfg.batch_size, progress=cfg.progress)
  pb = inputs.problem((model.apply, params), x, label=y, check_logits=False)
  adv = run(jobs.attack(cfg.attack, targeted=False), "attack")
  opts = cfg.conv_certify if conv else CertifyOptions(method=cfg.method)
  rho = run(jobs.certify(opts), opts.method)["l2"]
  correct = np.asarray(models.predict(model, params, x)) == y
  d = np.where(adv["success"], adv["l2"], np.inf)
  evaluate.check_bracket(rho, d, folder)  # a violation is a bug: stop
  ok = correct & adv["success"]
  k = cfg.n_lipschitz
  pair = ok[:k].reshape((-1,) + (1,) * (x.ndim - 1))  # pairs x_adv = x are ignored
  emp = layers.empirical_lower_bound(model.apply, x[:k], np.where(
      pair, adv["x_adv"][:k], x[:k]), params=params)
  mean = lambda a: float(a.mean()) if a.size else None
  row = {"test_err": models.error_rate(model, params, te.x, te.y),
         "mean_l2": mean(adv["l2"][ok]), "mean_rms": mean(adv["distortion"][ok]),
         "attack_success": mean(adv["success"][correct]),
         "mean_radius": mean(rho[correct]),
         "bound_product": layers.layer_bounds(model, params).product,
         "empirical_lower": _finite(emp.lower)}
  for e in cfg.eps:
    row[f"certified@{e}"] = evaluate.certified_accuracy(rho, correct, e)
    row[f"attacked@{e}"] = evaluate.attacked_accuracy(d, correct, e)
  return row


def run_cell(cfg: config.Config, v, s: int, tr, te) -> dict:
  """Trains and measures one cell, or reads its finished row."""
  folder = os.path.join(cfg.runs_dir, "lipschitz_training", f"seed{s}",
                        v.name.replace(" ", "_"))
  path = os.path.join(folder, "row.json")
  if not os.path.exists(path):
    model, params, meta = fit(cfg, v, s, tr, folder)
    row = dict(variant=v.name, seed=s, model=v.model, note=v.note,
               train_seconds=meta["train_seconds"], **measure(cfg, model, params, te, folder, v.model == "conv"))
    common.dump_json(path, row)
  return common.read_json(path)


def _finite(v):
  """None where no value exists: a constant net has no adversarial pairs and a
  zero Jacobian, so no empirical lower bound (not NaN)."""
  return None if v is None or not np.isfinite(v) else float(v)


def run(cfg: config.Config, workdir: str) -> dict:
  """Every selected cell in order; the table and figure are rewritten after each."""
  todo = cells(cfg)
  names = cfg.selected(list(dict.fromkeys(v.name for v, _ in todo)))  # fails before work
  fields = FIELDS + tuple(f"{w}@{e}" for w in ("certified", "attacked") for e in cfg.eps)
  tr, te = common.load_data(cfg)
  rows: list[dict] = []
  def results():
    return {"rows": rows, "summary": common.summarize_rows(rows, "variant", fields),
            "n_train_used": len(tr.x)}
  for v, s in common.save_each([c for c in todo if c[0].name in names], workdir, cfg,
                               config, markdown, results):
    rows.append(run_cell(cfg, v, s, tr, te))
    figure(results(), cfg, os.path.join(workdir, "figure.png"))
  return results()


def figure(results: dict, cfg: config.Config, path: str) -> None:
  """Test error against certified accuracy at the smallest ε and at ε = 1.58
  (the anchors' radius, marked there); conv cells as squares."""
  plt = plots.plt
  colours = plt.get_cmap("tab20").colors
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
  for ax, e in zip(axes, (min(cfg.eps), max(cfg.eps))):
    for i, (name, f) in enumerate(results["summary"].items()):
      c, t = f[f"certified@{e}"], f["test_err"]
      ax.errorbar(100 * c["mean"], 100 * t["mean"], xerr=100 * c["sd"], yerr=100 * t["sd"],
                  fmt="s" if name.startswith("conv") else "o", ms=5,
                  color=colours[i % len(colours)], label=name)
    if e == max(cfg.eps):
      for name, (clean, cert) in config.ANCHORS.items():
        if clean is None:  # certified accuracy published alone
          continue
        ax.plot(cert, 100 - clean, "k*", ms=8)
        ax.annotate(name, (cert, 100 - clean), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set(xlabel=f"certified accuracy at L2 ε = {e} (%)",
           yscale="log" if all(f["test_err"]["mean"] > 0 for f in results["summary"].values())
           else "linear",
           title=f"ε = {e}" + (" (published anchors ★)" if e == max(cfg.eps) else ""))
  axes[0].set_ylabel("clean test error (%)")
  axes[0].legend(fontsize=6, loc="upper right", ncol=2)
  fig.suptitle("Bounds in the loss: cost and certified gain (collapsed nets: constant, error 88.7%)",
               fontsize=9)
  fig.tight_layout()
  plots.save(fig, path)


def markdown(results: dict, cfg: config.Config) -> str:
  """results.md: mean ± sd over seeds per variant."""
  fmt = common.mean_sd
  eps = [f"{w} ε={e}" for w in ("cert.", "att.") for e in cfg.eps]
  lines = ["| variant | seeds | test err % | attack L2 (RMS) | CROWN radius L2 | "
           + " | ".join(eps) + " | ∏ bounds | empirical L |",
           "|" + " --- |" * (7 + len(eps))]
  for name, f in results["summary"].items():
    acc = " | ".join(fmt(f, f"{w}@{e}", 100, 1) for w in ("certified", "attacked")
                     for e in cfg.eps)
    lines.append(f"| {name} | {f['test_err']['n']} | {fmt(f, 'test_err', 100)} | "
                 f"{fmt(f, 'mean_l2')} ({fmt(f, 'mean_rms', 1, 4)}) | {fmt(f, 'mean_radius')} | "
                 f"{acc} | {fmt(f, 'bound_product', 1, 1)} | {fmt(f, 'empirical_lower', 1, 1)} |")
  anchors = config.anchors_text()
  return ("Accuracies (%) over the first test images (certified: correct and ρ ≥ ε; "
          "attacked: correct and d > ε); radii over correct images.\n\n"
          + "\n".join(lines) + f"\n\nAnchors (clean / certified at ε = 1.58): {anchors}.\n"
          "\n![test error against certified accuracy](figure.png)\n")


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
