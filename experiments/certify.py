"""The bracket ρ(x) ≤ d*(x) ≤ d(x) for the paper's nets; see configs/certify.py.

For each model: the untargeted attack's distortion d(x) and every method's
certified radius ρ(x) on the same test images, each through the job engine
(cached under runs/, resumable per batch), results saved after each model.
A radius above the attack's distance is a bug: the run stops there.
"""

from __future__ import annotations

import math
import os
import time
import types

import jax
import numpy as np

from advjax import attack, criteria, evaluate, inputs, models
from advjax.certify.options import CertifyOptions
from advjax.runs import driver, jobs
from experiments import common
from experiments.configs import certify as config


def get_model(cfg: config.Config, name: str, train_set, seed: int):
  """(model, params, source): the seed's checkpoint, or random init in quick mode;
  the ReLU yardstick is the benchmark's 784-300-100-10 MLP (cached under runs/)."""
  if name == config.YARDSTICK:
    from experiments import bench_attack  # pylint: disable=import-outside-toplevel
    bench_cfg = types.SimpleNamespace(runs_dir=cfg.runs_dir, mlp_epochs=cfg.yardstick_epochs,
                                      progress=cfg.progress)
    model, params = bench_attack._mlp(bench_cfg, train_set)  # pylint: disable=protected-access
    return model, params, f"trained here, {cfg.yardstick_epochs} Adam epochs (runs/bench/)"
  try:
    model, params, meta = common.load_model(cfg, seed, name)
    return model, params, f"checkpoint (test error {meta.get('errors', {}).get('test')})"
  except ValueError:
    if not cfg.quick:
      raise
  model = models.get_model("conv" if name == "conv" else name)
  return model, model.init(jax.random.PRNGKey(0)), "random init"


def _timed(job, pb, folder: str, cfg: config.Config):
  """(results, seconds): measured now, or read back with the results from the
  run that computed them (seconds.json; None if that run was interrupted)."""
  cached = driver.is_complete(folder)
  fresh = not os.path.exists(os.path.join(folder, driver.PROGRESS))  # a resumed run's time is partial
  t0 = time.perf_counter()
  res = driver.execute(job, pb, folder, batch_size=cfg.batch_size, progress=cfg.progress)
  path = os.path.join(folder, "seconds.json")
  if not cached:
    secs = round(time.perf_counter() - t0, 2) if fresh else None
    common.dump_json(path, {"seconds": secs})
    return res, secs
  return res, common.read_json(path)["seconds"] if os.path.exists(path) else None


def _attack(cfg, opts, model, params, x, y, folder):
  """The untargeted attack away from y: (distance d, inf where it failed; seconds)."""
  pb = inputs.problem((model.apply, params), x, label=y, check_logits=False)
  adv, secs = _timed(jobs.attack(opts, targeted=False), pb, folder, cfg)
  return adv, np.where(adv["success"], adv["l2"], np.inf), secs


def _options(cfg, name: str, method: str) -> tuple[CertifyOptions, str]:
  """The certificate's options and its cache folder's name."""
  opts = (CertifyOptions(method="crown", box=False) if method == "crown-nobox"
          else CertifyOptions(method=method))
  if name != "conv":
    return opts, method
  opts = opts._replace(rtol=cfg.conv_rtol)  # its CROWN is the slow one: stop at 1%
  if cfg.conv_patches and method == "crown":  # issue 28: no interval for a conv layer
    opts = config.CONV_PATCHES._replace(rtol=cfg.conv_rtol, dtype=cfg.conv_dtype)
    return opts, "crown+patches+fc" + ("32" if cfg.conv_dtype == "float32" else "")
  if cfg.conv_units and method in ("ibp", "crown"):
    return opts._replace(lipschitz_units=True), method + "+units"
  return opts, method


def _certify(cfg, name, method, model, params, x, y, cache, d):
  """One method's radii (checked against the attack's distances), seconds and
  cache folder's name."""
  pb = inputs.problem((model.apply, params), x, label=y, check_logits=False)
  opts, folder = _options(cfg, name, method)
  res, secs = _timed(jobs.certify(opts), pb, os.path.join(cache, folder), cfg)
  rho = res["l2"]
  evaluate.check_bracket(rho, d, f"{name} {method}")  # a violation stops the run
  return rho, secs, folder


def _row(cfg, rho, d, correct, m: int, secs) -> dict:
  """The statistics of one set of radii against the attack's distances."""
  return {"mean_l2": float(rho[correct].mean()), "median_l2": float(np.median(rho[correct])),
          "mean_rms": criteria.per_pixel(float(rho[correct].mean()), (m,)),
          "median_ratio": evaluate.median_ratio(rho, d, correct),
          "certified_accuracy": {str(e): evaluate.certified_accuracy(rho, correct, e)
                                 for e in cfg.eps},
          "seconds": secs, "images_per_s": None if not secs else round(len(rho) / secs, 1),
          "curve": _curve(rho, correct)}


def bracket(cfg: config.Config, name: str, model, params, x, y, seed: int) -> dict:
  """The attack and every certificate on (x, y), with the accuracy columns."""
  cache = common.cache_dir(cfg, "certify", seed, name, n=len(x))
  adv, d, adv_s = _attack(cfg, cfg.attack, model, params, x, y, os.path.join(cache, "attack"))
  correct = np.asarray(models.predict(model, params, x)) == y
  hit = adv["success"] & correct
  out = {"n": int(len(x)), "accuracy": float(correct.mean()), "attack_seconds": adv_s,
         "attack_mean_l2": float(adv["l2"][hit].mean()),
         "attack_mean_rms": float(adv["distortion"][hit].mean()),
         "attack_success": float(adv["success"][correct].mean()),
         "attacked_accuracy": {str(e): evaluate.attacked_accuracy(d, correct, e) for e in cfg.eps},
         "attack_curve": _curve(d, correct, strict=True), "methods": {}, "violations": 0}
  m, radii = int(np.prod(x.shape[1:])), {}
  methods = config.YARDSTICK_METHODS if name == config.YARDSTICK else cfg.methods
  for method in methods:
    if method == "exact" and name not in config.AFFINE:
      continue
    radii[method], secs, folder = _certify(cfg, name, method, model, params, x, y, cache, d)
    out["methods"][method] = _row(cfg, radii[method], d, correct, m, secs)
    if folder != method:  # e.g. the conv net's 'crown+units'
      out["methods"][method]["variant"] = folder
  ok = correct & np.isfinite(d) & (d > 0)
  if "exact" in radii:  # the bracket closes on affine models: how far is the attack?
    out["attack_over_exact"] = _over(d, radii["exact"], ok)
    if cfg.paper_on_affine:
      _, dp, _ = _attack(cfg, attack.PAPER, model, params, x, y,
                         os.path.join(cache, "attack-paper"))
      out["paper_attack_over_exact"] = _over(dp, radii["exact"], ok & np.isfinite(dp))
  if "crown" in radii and "lipschitz" in radii:  # the larger of two sound lower bounds
    out["methods"]["max(crown, lipschitz)"] = _row(
        cfg, np.maximum(radii["crown"], radii["lipschitz"]), d, correct, m, None)
  return out


NEAR = 0.01  # L2: examples this close to the boundary are ruled by float32's margin


def _over(d, rho, ok) -> dict:
  """The attack's distance over the exact minimum: mean and worst ratio − 1; the
  worst also over examples at least NEAR from the boundary, where the success
  margin (128 float32 ulps of the largest logit, ~3e-5 in L2 here) is not the
  whole excess, with the count of the nearer ones."""
  q = d[ok] / rho[ok] - 1
  far = rho[ok] >= NEAR
  return {"mean": float(q.mean()), "max": float(q.max()), "n": int(ok.sum()),
          "max_far": float(q[far].max()) if far.any() else None, "n_near": int((~far).sum()),
          "max_abs": float((d[ok] - rho[ok]).max())}


def _curve(r, correct, strict: bool = False) -> list:
  """Accuracy at ε on a grid 0..3 (certified: r ≥ ε; attacked: r > ε)."""
  grid = np.linspace(0, 3, 61)
  return [float((correct & ((r > e) if strict else (r >= e))).mean()) for e in grid]


def run(cfg: config.Config, workdir: str) -> dict:
  """The bracket of every model (the first seed: tables and figures), then the
  nets of `more_seeds_models` at `more_seeds` (mean ± sd over seeds), saved
  after each."""
  tr, te = common.load_data(cfg)
  results = {"models": {}, "seeds": {}}
  names = cfg.selected(cfg.models + ((config.YARDSTICK,) if cfg.yardstick else ()))
  first = cfg.seeds[0]
  todo = [(n, first) for n in names] + [
      (n, s) for s in cfg.more_seeds for n in names if n in cfg.more_seeds_models]
  for name, seed in common.save_each(todo, workdir, cfg, config, markdown, lambda: results):
    n = cfg.n_conv if name == "conv" else cfg.n_images
    model, params, source = get_model(cfg, name, tr, seed)
    res = bracket(cfg, name, model, params, te.x[:n], te.y[:n].astype(np.int32), seed)
    if seed == first and name not in results["models"]:
      results["models"][name] = dict(res, source=source)
      _figure(workdir, name, res, cfg)
    results["seeds"].setdefault(name, {})[str(seed)] = _compact(res)
  return results


def _compact(res: dict) -> dict:
  """One seed's headline numbers: median ρ/d per method, the attack's mean d,
  the affine excess."""
  out = {"attack_mean_l2": res["attack_mean_l2"], "accuracy": res["accuracy"],
         **{f"median_ratio/{m}": r["median_ratio"] for m, r in res["methods"].items()}}
  if "attack_over_exact" in res:
    out["attack_over_exact/mean"] = res["attack_over_exact"]["mean"]
    out["attack_over_exact/max"] = res["attack_over_exact"]["max"]
  return out


def spread(results: dict) -> dict:
  """Per model, mean ± sd over seeds of every compact number (`_compact`)."""
  return {n: _spread(by_seed) for n, by_seed in results["seeds"].items()}


def _spread(by_seed: dict) -> dict:
  """mean ± sd over seeds of every compact number."""
  keys = set.intersection(*(set(v) for v in by_seed.values()))
  return {k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
              "n": len(v)} for k in sorted(keys)
          for v in [[row[k] for row in by_seed.values()]]}


def _figure(workdir: str, name: str, res: dict, cfg: config.Config) -> None:
  """Accuracy against ε: each certificate below, the attack above."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  grid = np.linspace(0, 3, 61)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(grid, res["attack_curve"], "k-", label="attack (upper bound)")
  for method, r in res["methods"].items():
    ax.plot(grid, r["curve"], "--", label=f"{method} (certified)")
  for e in cfg.eps:
    ax.axvline(e, color="0.85", lw=0.8, zorder=0)
  ax.set(xlabel="L2 radius ε", ylabel="accuracy", title=f"{name}: the bracket", ylim=(0, 1))
  ax.legend(fontsize=7)
  fig.tight_layout()
  safe = name.replace("(", "_").replace(")", "")
  fig.savefig(os.path.join(workdir, f"bracket_{safe}.png"), dpi=110)
  plt.close(fig)


def markdown(results: dict, cfg: config.Config) -> str:
  """results.md: one row per model and method, the attack beside."""
  eps = " | ".join(f"ε={e}" for e in cfg.eps)
  lines = [f"| model | method | mean ρ (L2) | mean ρ (RMS) | median ρ/d | certified: {eps} "
           "| img/s |", "|" + " --- |" * (6 + len(cfg.eps))]
  for name, r in results["models"].items():
    acc = " | ".join(f"{r['attacked_accuracy'][str(e)]:.3f}" for e in cfg.eps)
    lines.append(f"| {name} | attack d (upper) | {r['attack_mean_l2']:.3f} | "
                 f"{r['attack_mean_rms']:.4f} | 1 | {acc} | |")
    for method, m in r["methods"].items():
      acc = " | ".join(f"{m['certified_accuracy'][str(e)]:.3f}" for e in cfg.eps)
      lines.append(f"| {name} | {m.get('variant', method)} | {m['mean_l2']:.3f} | {m['mean_rms']:.4f} | "
                   f"{m['median_ratio']:.3f} | {acc} | {m['images_per_s'] or ''} |")
  aff = [f"- {n}: the default attack's distance is {r['attack_over_exact']['mean']:+.3%} "
         f"above the exact minimum on average, {r['attack_over_exact']['max']:+.3%} at worst"
         + (f" ({r['attack_over_exact']['max_far']:+.3%} over the examples at least {NEAR} "
            f"from the boundary, all but {r['attack_over_exact']['n_near']})"
            if r["attack_over_exact"].get("max_far") is not None else "")
         + (f"; PAPER {r['paper_attack_over_exact']['mean']:+.3%} / "
            f"{r['paper_attack_over_exact']['max']:+.3%}" if "paper_attack_over_exact" in r
            else "") for n, r in results["models"].items() if "attack_over_exact" in r]
  mnist = (28, 28, 1)
  rms = ", ".join(f"L2 {e} = RMS {criteria.per_pixel(e, mnist):.4f}" for e in cfg.eps)
  m = math.prod(mnist)
  return ("Radii over correctly classified images; accuracies over all images "
          f"(attack: correct and d > ε, an upper bound on robust accuracy). ε in the "
          f"paper's unit (MNIST, m = {m}): {rms}.\n\n"
          + "\n".join(lines) + ("\n\nAffine models (exact minimum inside the box):\n"
                                 + "\n".join(aff) if aff else "") + _spread_table(results))


def _spread_table(results: dict) -> str:
  """Median ρ/d per method (and the affine excess), mean ± sd over seeds."""
  rows = {n: s for n, s in spread(results).items() if s and
          next(iter(s.values()))["n"] > 1}
  if not rows:
    return ""
  methods = ["lipschitz", "ibp", "crown", "exact"]
  f = lambda s, k, p=3: f"{s[k]['mean']:.{p}f} ± {s[k]['sd']:.{p}f}" if k in s else "–"
  lines = ["| model | seeds | " + " | ".join(methods) + " | attack mean d | attack over exact (mean) |",
           "|" + " --- |" * (len(methods) + 4)]
  for n, s in rows.items():
    over = (f"{100 * s['attack_over_exact/mean']['mean']:+.3f} ± "
            f"{100 * s['attack_over_exact/mean']['sd']:.3f}%" if "attack_over_exact/mean" in s else "–")
    lines.append(f"| {n} | {next(iter(s.values()))['n']} | "
                 + " | ".join(f(s, f"median_ratio/{m}") for m in methods)
                 + f" | {f(s, 'attack_mean_l2')} | {over} |")
  return ("\n\nOver training seeds (median ρ/d per method, mean ± sd):\n\n"
          + "\n".join(lines))


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
