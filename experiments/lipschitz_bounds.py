"""Table 5 (§4.3): per-layer Lipschitz bounds; see configs/lipschitz.py.

For each MNIST checkpoint under --models-dir and for AlexNet (random init, or
a torchvision state_dict via --alexnet-weights) prints every layer's certified
bound, the Lanczos estimate, the product over the network and an empirical
lower bound (largest ‖∂f/∂x‖₂ on data, and on adversarial pairs given with
--pairs x.npz holding 'x' and 'x_adv'). Writes config.json, results.json and
results.md to --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

if __package__ in (None, ""):  # run as a script: make `experiments` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from advjax import checkpoint, convert, data, lipschitz, models
from experiments import common
from experiments.configs import lipschitz as config


def mnist_points(n: int, data_dir: str | None, seed: int):
  """n MNIST test images, or uniform noise images when no data is found."""
  try:
    x = data.load("mnist", "test", data_dir).x[:n]
    return x, "mnist test"
  except Exception as e:  # no data here: say so in the results
    print(f"MNIST not found ({e}); Jacobian norms on uniform noise.")
    return np.random.RandomState(seed).rand(n, 28, 28, 1).astype(np.float32), "noise"


def get_mnist_model(folder: str, models_dir: str, quick: bool, seed: int):
  """(model, params, source) from a checkpoint, or random init in quick mode."""
  path = os.path.join(models_dir, folder)
  if os.path.exists(os.path.join(path, checkpoint.META)):
    model, params, meta = checkpoint.load(path)
    return model, params, f"checkpoint {path} (test err {meta.get('errors', {}).get('test')})"
  if not quick:
    return None, None, f"missing checkpoint {path}"
  name = folder.split("-", 1)[1] if folder.startswith(("P1-", "P2-")) else folder
  model = models.get_model(name)
  return model, model.init(jax.random.PRNGKey(seed)), "random init"


def analyse(model, params, x, cfg, pairs=None) -> dict:
  """Table 5 rows, products and the empirical lower bound of one model."""
  t0 = time.time()
  nb = lipschitz.layer_bounds(model, params, tol=cfg["tol"])
  t1 = time.time()
  fn = lambda p, v: model.apply(p, v)
  e = lipschitz.empirical_lower_bound(fn, x, None if pairs is None else pairs[1],
                                      iters=cfg["jacobian_iters"], batch_size=16,
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


def main(argv: list[str] | None = None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--models-dir", default="runs/models")
  ap.add_argument("--alexnet-weights", default=None,
                  help="torchvision AlexNet state_dict (.pth/.npz) for 'alexnet-torchvision'")
  ap.add_argument("--no-alexnet", action="store_true")
  ap.add_argument("--data-dir", default=None)
  ap.add_argument("--pairs", default=None, help=".npz with 'x' and 'x_adv' (MNIST)")
  ap.add_argument("--results", "--out", dest="out", default=None,
                  help="results folder (default experiments/results/[quick/]lipschitz)")
  args = ap.parse_args(argv)
  args.out = args.out or common.results_dir("lipschitz", args.quick)
  cfg = config.get_config(args.quick)
  common.write_config(args.out, dict(cfg, args=vars(args)), argv)
  results, md = {"mnist": {}, "alexnet": {}, "missing": []}, []
  x, points = mnist_points(cfg["n_data"], args.data_dir, cfg["seed"])
  pairs = None
  if args.pairs:
    with np.load(args.pairs) as z:
      pairs = (z["x"], z["x_adv"])
  for folder in cfg["mnist_models"]:
    model, params, source = get_mnist_model(folder, args.models_dir, args.quick, cfg["seed"])
    if model is None:
      print(source)
      results["missing"].append(folder)
      continue
    xs = pairs[0] if pairs is not None else x
    res = dict(analyse(model, params, xs, cfg, pairs), source=source, points=points)
    results["mnist"][folder] = res
    md.append(table(folder, res, paper=False))
    print(md[-1])
    save(args.out, results, cfg, md, argv)  # incremental: an interrupt loses one model
  for name in () if args.no_alexnet else cfg["alexnets"]:
    model = models.get_model(name)
    if args.alexnet_weights and name == "alexnet-torchvision":
      params, source = convert.load_alexnet(args.alexnet_weights, name)[1], args.alexnet_weights
    else:
      params, source = model.init(jax.random.PRNGKey(cfg["seed"])), "random init (flax default)"
    xa = np.random.RandomState(cfg["seed"]).rand(
        cfg["n_alexnet_data"], *model.input_shape).astype(np.float32)
    res = dict(analyse(model, params, xa, cfg), source=source, points="uniform-noise")
    results["alexnet"][name] = res
    md.append(table(name, res, paper=True))
    print(md[-1])
    save(args.out, results, cfg, md, argv)
  save(args.out, results, cfg, md, argv)
  return results


def save(out: str, results: dict, cfg: dict, md: list[str], argv) -> None:
  """results.json and results.md of everything measured so far."""
  common.write_results(out, dict(results, config=cfg), "\n\n".join(md),
                       "Per-layer Lipschitz bounds (§4.3, Table 5)", argv)


if __name__ == "__main__":
  main()
