"""Certified radii at speed: CROWN on MNIST test images, the batched path (first and
warm call) beside per-example loops (issue 21's speed rows; BUILD_NOTES.md §5b).

Per net: the batched path on `n` images (first call, warm call); on `n_loop`
images spread over them, the same batch against two loops over single images:
of the same compiled function (`certify.batch`), and of the public
`certify.radius` (what a user without the batched path writes); the batched path
with `chunk` examples vmapped together. FC100-100-10 at 1,000 images (also with
rtol=0.01), the conv net at 100 (rtol=0.01, as experiments.certify runs it) and
with patches at 10 (issue 28: ~6 s per image); the committed LMT-trained
wong-small at 100, its convolutions as intervals and in patches.

Command: python -m experiments.certify_speed [OUT.json] [--only TAG]   (after train_models;
         MNIST from $ADVJAX_DATA_DIR; about 5 min on 2 quiet CPU cores)
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from advjax import adapt, certify, checkpoint, data, models
from experiments import common
from experiments.configs.certify import CONV_PATCHES


def _timed(f, *a):
  t = time.perf_counter()
  out = jax.block_until_ready(f(*a))
  return out, time.perf_counter() - t


def measure(opts, model, x, y, n_loop: int, chunks=(8,)) -> dict:
  """img/s of the batch (first, warm), of the loops and of vmapped chunks."""
  w = adapt.wrap(model, x.shape[1:])
  lo, hi = np.zeros(x.shape[1:], np.float32), np.ones(x.shape[1:], np.float32)
  f = lambda xs, ys, o=opts: certify.batch(
      w.apply, w.params, jnp.asarray(xs), jnp.asarray(ys), lo, hi, o).l2
  _, first = _timed(f, x, y)
  r, warm = _timed(f, x, y)
  idx = np.linspace(0, len(x) - 1, n_loop).astype(int)
  xs, ys = x[idx], y[idx]
  f(xs, ys), f(xs[:1], ys[:1])  # compile the sub-batch and the one-image shapes
  r_sub, sub = _timed(f, xs, ys)
  loop = sum(_timed(f, xs[i:i + 1], ys[i:i + 1])[1] for i in range(n_loop))
  api = lambda i: certify.radius(model, xs[i:i + 1], ys[i:i + 1], options=opts).l2
  api(0)
  api_loop = sum(_timed(api, i)[1] for i in range(n_loop))
  out = dict(n=len(x), first_s=first, warm_s=warm, first_img_s=len(x) / first,
             batch_img_s=len(x) / warm, n_loop=n_loop, sub_batch_img_s=n_loop / sub,
             loop_img_s=n_loop / loop, api_loop_img_s=n_loop / api_loop,
             lead=loop / sub, lead_over_api_loop=api_loop / sub,
             same=bool(np.array_equal(np.asarray(r)[idx], np.asarray(r_sub))),
             mean_l2=float(np.mean(r)))
  for c in chunks:
    o = opts._replace(chunk=c)
    f(xs, ys, o)
    out[f"chunk{c}_sub_batch_img_s"] = n_loop / _timed(f, xs, ys, o)[1]
  return out


# (tag, checkpoint, options, images, images in the loops, chunk sizes)
ROWS = (
    ("FC100-100-10 crown", "FC100-100-10", certify.CertifyOptions(), 1000, 50, (8,)),
    ("FC100-100-10 crown rtol 0.01", "FC100-100-10", certify.CertifyOptions(rtol=0.01),
     1000, 50, (8,)),
    ("conv crown rtol 0.01", "conv", certify.CertifyOptions(rtol=0.01), 100, 10, (4,)),
    # issue 28: CROWN through the convolutions in patches, fc1 by the dense pass
    ("conv crown+patches+fc rtol 0.01", "conv",
     CONV_PATCHES._replace(rtol=0.01), 10, 3, (2,)),
    # the same in float32 (its rounding in the slack): a trial's passes ~2× faster
    ("conv crown+patches+fc float32 rtol 0.01", "conv",
     CONV_PATCHES._replace(rtol=0.01, dtype="float32"), 10, 3, (2,)),
    # issue 28: the certified-training nets (committed, `models.pretrained`):
    # wong-small's convolutions as intervals, then through them in patches
    ("lmt-wong-small crown rtol 0.01", "pretrained:lmt-wong-small",
     certify.CertifyOptions(rtol=0.01), 100, 10, (4,)),
    ("lmt-wong-small crown+patches rtol 0.01", "pretrained:lmt-wong-small",
     certify.CertifyOptions(rtol=0.01, patches=True), 100, 10, (4,)),
)


def load(name: str, runs_dir: str = "runs"):
  """(model, params): a committed pretrained net ('pretrained:NAME') or seed 0's
  checkpoint from train_models (the experiments' folder rule, under runs_dir)."""
  if name.startswith("pretrained:"):
    return models.pretrained(name.split(":", 1)[1])
  folder = common.ExperimentConfig(runs_dir=runs_dir).models_dir(0)
  m, p, _ = checkpoint.load(os.path.join(folder, name))
  return m, p


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("out", nargs="?", help="write the rows to this JSON file")
  ap.add_argument("--only", default="", help="the rows whose tag contains this")
  ap.add_argument("--runs-dir", default="runs", help="train_models' runs folder (seed 0's nets)")
  a = ap.parse_args()
  te = data.load("mnist", "test")
  y = te.y.astype(np.int32)
  out = {}
  for tag, name, o, n, n_loop, chunks in ROWS:
    if a.only not in tag:
      continue
    m, p = load(name, a.runs_dir)
    out[tag] = measure(o, (m.apply, p), te.x[:n], y[:n], n_loop, chunks=chunks)
    print(tag, json.dumps(out[tag]), flush=True)
  if a.out:
    with open(a.out, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
