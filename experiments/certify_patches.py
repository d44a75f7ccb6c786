"""CROWN through convolutions in patches (issue 28): ρ/d before and after.

On Wong et al.'s small conv net ('wong-small', trained briefly here: `epochs`
of Adam, seed 0) and, given a checkpoint, the paper's conv net: per test
image (correctly classified, the first `n`), the §4.1 attack's distance d and
the certified radius ρ of
  * crown: today's default (wide conv layers keep interval bounds);
  * crown+patches: `CertifyOptions(patches=True)`;
  * dense: CROWN with a dense Λ everywhere (crown_budget unbounded: the
    reference the patches must equal; small nets only);
  * plain: the dense CROWN with the box ignored (box=False: what a CROWN
    without the box certifies; the issue's target for the strided net).
Seconds per image are of a warm call (compiled first on the same shapes).

Command: python -m experiments.certify_patches [--n 20] [--epochs 1]
         [--conv CHECKPOINT | --conv-epochs 1] [--n-conv 5] [--skip-wong]
         [--conv-variants crown+units,crown+patches+fc,...]
         [--out experiments/results/certify_patches]   (conv rows: rtol 0.01)
         (MNIST from $ADVJAX_DATA_DIR)
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from advjax import adapt, certify, checkpoint, data, evaluate, models, train
from advjax.attack import lbfgs
from experiments.configs.certify import CONV_PATCHES as FC

VARIANTS = {
    "crown": certify.CertifyOptions(),
    "crown+patches": certify.CertifyOptions(patches=True),
    "dense": certify.CertifyOptions(crown_budget=1 << 40),
    "plain": certify.CertifyOptions(crown_budget=1 << 40, box=False),
    # the paper's conv net: patches, and fc1 by the dense pass too (CONV_PATCHES)
    "crown+patches+fc": FC,
    # the bracket's conv rows (experiments.certify: conv_units) and with patches
    "crown+units": certify.CertifyOptions(lipschitz_units=True),
    "crown+patches+fc+units": FC._replace(lipschitz_units=True),
    # α-CROWN on top: its slopes in every pass (the default), or in the
    # output's pass only; a plain CROWN (box ignored) beside them
    "alpha+patches+fc": FC._replace(method="alpha-crown"),
    "alpha-out+patches+fc": FC._replace(method="alpha-crown", alpha_scope="output"),
    "plain+patches+fc": FC._replace(box=False),
    # the same CROWN computed in float32 (its rounding bounded by the slack): ~2× faster
    "crown+patches+fc32": FC._replace(dtype="float32"),
}
CONV = ("crown+units", "crown+patches+fc", "crown+patches+fc+units", "alpha+patches+fc",
        "plain+patches+fc")
WONG = ("crown", "crown+patches", "dense", "plain")


def _images(model, params, n: int):
  """The first n correctly classified test images and their labels."""
  ds = data.load("mnist", "test")
  pred = models.predict(model, params, ds.x[: 4 * n])
  ok = np.flatnonzero(pred == ds.y[: 4 * n])[:n]
  return ds.x[ok], ds.y[ok]


def _radii(model, params, x, y, opts):
  """(radii, seconds per image of a warm call, method string)."""
  w = adapt.wrap((model.apply, params), x.shape[1:])
  lo, hi = np.zeros(x.shape[1:], np.float32), np.ones(x.shape[1:], np.float32)
  f = lambda: certify.batch(w.apply, w.params, jnp.asarray(x), jnp.asarray(y), lo, hi, opts)
  jax.block_until_ready(certify.batch(w.apply, w.params, jnp.asarray(x[:1]),
                                      jnp.asarray(y[:1]), lo, hi, opts).l2)
  t = time.perf_counter()
  res = f()
  jax.block_until_ready(res.l2)
  return np.asarray(res.l2), (time.perf_counter() - t) / len(x), res.method


def run(name, model, params, n: int, variants, rtol: float = 0.0) -> dict:
  """Per variant: median ρ/d, s/img, and the per-example ρ and d."""
  x, y = _images(model, params, n)
  adv = lbfgs((model.apply, params), x, label=y)
  d = np.where(np.asarray(adv.success), np.asarray(adv.l2), np.nan)
  out = {"net": name, "n": len(x), "d": d.tolist(), "params": models.num_params(params)}
  for v in variants:
    rho, s, method = _radii(model, params, x, y, VARIANTS[v]._replace(rtol=rtol))
    evaluate.check_bracket(rho, d, f"{name} {v}")  # never above a known adversarial distance
    out[v] = {"median_rho_over_d": evaluate.median_ratio(rho, d, True), "s_per_img": s,
              "method": method, "rho": rho.tolist()}
    print(f"{name:12s} {v:14s} median ρ/d {out[v]['median_rho_over_d']:.4f} "
          f"{s:8.2f} s/img  ({method})", flush=True)
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--n", type=int, default=20)
  ap.add_argument("--epochs", type=int, default=1)
  ap.add_argument("--conv", default=None, help="a checkpoint of the paper's conv net")
  ap.add_argument("--conv-epochs", type=int, default=0,
                  help="without --conv: train the paper's conv net this many epochs")
  ap.add_argument("--n-conv", type=int, default=5)
  ap.add_argument("--skip-wong", action="store_true")
  ap.add_argument("--conv-variants", default=",".join(CONV),
                  help=f"comma-separated, of {sorted(VARIANTS)}")
  ap.add_argument("--out", default="experiments/results/certify_patches")
  a = ap.parse_args()
  ds, rows, err = data.load("mnist", "train"), [], {}
  test = data.load("mnist", "test")
  if not a.skip_wong:
    wong = models.get_model("wong-small")
    params = train.train(wong, ds, train.TrainConfig(epochs=a.epochs), progress=False).params
    err["wong-small"] = models.error_rate(wong, params, test.x, test.y)
    print(f"wong-small: {a.epochs} epoch(s) of Adam, test error {err['wong-small']:.4f}")
    rows.append(run("wong-small", wong, params, a.n, WONG))
  if a.conv or a.conv_epochs:
    if a.conv:
      conv, p, _ = checkpoint.load(a.conv)
    else:
      conv = models.get_model("conv")
      p = train.train(conv, ds, train.TrainConfig(epochs=a.conv_epochs), progress=False).params
    err["conv"] = models.error_rate(conv, p, test.x, test.y)
    print(f"conv: test error {err['conv']:.4f}", flush=True)
    rows.append(run("conv", conv, p, a.n_conv, a.conv_variants.split(","), rtol=0.01))
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "results.json"), "w") as f:
    json.dump({"rows": rows, "test_error": err, "args": vars(a)}, f, indent=1)


if __name__ == "__main__":
  main()
