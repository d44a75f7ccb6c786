"""Table 5 (§4.3): per-layer Lipschitz bounds; see configs/lipschitz_bounds.py.

For each MNIST checkpoint (of the first seed) and for AlexNet (random init,
or a torchvision state_dict via --config.alexnet_weights) prints every
layer's certified bound, the Lanczos estimate, the product over the network
and an empirical lower bound (largest ‖∂f/∂x‖₂ on data, and on adversarial
pairs given with --config.pairs=x.npz holding 'x' and 'x_adv'). Writes
config.json, results.json and results.md (after every model: an interrupt
loses one model).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from advjax import checkpoint, convert, data, models
from advjax.norms import layers
from experiments import common
from experiments.configs import lipschitz_bounds as config


def mnist_points(n: int, data_dir: str | None, seed: int, dataset: str = "mnist"):
  """n test images (MNIST, the paper's), or uniform noise when no data is found."""
  try:
    x = data.load(dataset, "test", data_dir).x[:n]
    return x, f"{dataset} test"
  except data.DataError as e:  # no data here: say so in the results
    print(f"MNIST not found ({e}); Jacobian norms on uniform noise.")
    return np.random.RandomState(seed).rand(n, 28, 28, 1).astype(np.float32), "noise"


def get_mnist_model(cfg: config.Config, folder: str):
  """(model, params, source) from a checkpoint, or random init in quick mode."""
  path = os.path.join(cfg.models_dir(cfg.seeds[0]), folder)
  if os.path.exists(os.path.join(path, checkpoint.META)):
    model, params, meta = checkpoint.load(path)
    return model, params, f"checkpoint {path} (test err {meta.get('errors', {}).get('test')})"
  if not cfg.quick:
    return None, None, f"missing checkpoint {path}"
  name = folder.split("-", 1)[1] if folder.startswith(("P1-", "P2-")) else folder
  model = models.get_model(name)
  return model, model.init(jax.random.PRNGKey(cfg.seed)), "random init"


def analyse(model, params, x, cfg, pairs=None) -> dict:
  """Table 5 rows, products and the empirical lower bound of one model."""
  t0 = time.time()
  nb = layers.layer_bounds(model, params, tol=cfg.tol)
  t1 = time.time()
  fn = lambda p, v: model.apply(p, v)
  e = layers.empirical_lower_bound(fn, x, None if pairs is None else pairs[1],
                                      iters=cfg.jacobian_iters, batch_size=16,
                                      params=params)
  if pairs is not None and pairs[0].shape != x.shape:
    raise ValueError("--pairs 'x' must be the analysed points.")
  return {"rows": [r._asdict() for r in nb.rows], "product": nb.product,
          "product_estimate": nb.product_estimate, "certified": nb.certified,
          "empirical_lower": e.lower,
          "jacobian_norm_max": float(e.jacobian_norms.max()),
          "jacobian_norm_median": float(np.median(e.jacobian_norms)),
          "pair_ratio_max": (None if e.pair_ratios is None
                             else float(np.nanmax(e.pair_ratios))),
          "n_points": int(len(x)), "bounds_seconds": round(t1 - t0, 1),
          "empirical_seconds": round(time.time() - t1, 1)}


def table(name: str, res: dict, paper: bool) -> str:
  """Markdown Table 5 of one model (the paper's column for AlexNet)."""
  head = "| layer | size | stride | input | bound (certified) | estimate | how | iters | s |"
  lines = [f"### {name}\n\nsource: {res['source']}\n", head + (" paper |" if paper else ""),
           "|" + " --- |" * (10 if paper else 9)]
  for r in res["rows"]:
    if r["kind"] in ("flatten", "dropout"):
      continue
    cells = [r["name"], r["size"], r["stride"] or "", "×".join(map(str, r["input_shape"])),
             f"{r['bound']:.4g}", f"{r['estimate']:.4g}", r["method"],
             r["iterations"] or "", f"{r['seconds']:.1f}" if r["seconds"] else ""]
    if paper:
      cells.append(config.PAPER.get(r["name"], ("", "", ""))[2])
    lines.append("| " + " | ".join(str(c) for c in cells) + " |")
  lines.append(f"\nproduct of bounds {res['product']:.4g} (certified: {res['certified']}); "
               f"product of estimates {res['product_estimate']:.4g}; empirical lower "
               f"bound {res['empirical_lower']:.4g} (max ‖∂f/∂x‖ over {res['n_points']} "
               f"{res['points']} points; median {res['jacobian_norm_median']:.4g}); "
               f"looseness ×{res['product'] / res['empirical_lower']:.3g}.\n")
  return "\n".join(lines)


def alexnet_result(cfg: config.Config, name: str) -> dict:
  """Table 5 of one AlexNet variant, on uniform-noise images."""
  model = models.get_model(name)
  if cfg.alexnet_weights and name == "alexnet-torchvision":
    params, source = convert.load_alexnet(cfg.alexnet_weights, name)[1], cfg.alexnet_weights
  else:
    params, source = model.init(jax.random.PRNGKey(cfg.seed)), "random init (flax default)"
  xa = np.random.RandomState(cfg.seed).rand(
      cfg.n_alexnet_data, *model.input_shape).astype(np.float32)
  return dict(analyse(model, params, xa, cfg), source=source, points="uniform-noise")


def mnist_result(cfg: config.Config, folder: str, x, points: str, pairs) -> dict | None:
  """Table 5 of one MNIST checkpoint (None: the checkpoint is missing)."""
  model, params, source = get_mnist_model(cfg, folder)
  if model is None:
    print(source)
    return None
  xs = pairs[0] if pairs is not None else x
  return dict(analyse(model, params, xs, cfg, pairs), source=source, points=points)


def run(cfg: config.Config, workdir: str) -> dict:
  """Table 5 of every model (or of --only), saved after each one."""
  results = {"mnist": {}, "alexnet": {}, "missing": []}
  names = cfg.selected(cfg.mnist_models + cfg.alexnets)
  x, points = mnist_points(cfg.n_data, cfg.data_dir, cfg.seed, cfg.dataset)
  pairs = None
  if cfg.pairs:
    with np.load(cfg.pairs) as z:
      pairs = (z["x"], z["x_adv"])
  items = ([("mnist", m) for m in cfg.mnist_models if m in names]
           + [("alexnet", a) for a in cfg.alexnets if a in names])
  for kind, name in common.save_each(items, workdir, cfg, config, markdown,
                                     lambda: results):
    res = (alexnet_result(cfg, name) if kind == "alexnet"
           else mnist_result(cfg, name, x, points, pairs))
    if res is None:
      results["missing"].append(name)
    else:
      results[kind][name] = res
  return results


def markdown(results: dict, cfg: config.Config) -> str:
  """results.md: one Table 5 per model (the paper's column for AlexNet)."""
  return "\n\n".join([table(n, r, paper=False) for n, r in results["mnist"].items()]
                      + [table(n, r, paper=True) for n, r in results["alexnet"].items()])


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()
