"""Certified radii at speed: FC100-100-10 CROWN on 1,000 test images, the batched
path (first and warm call) beside a per-example loop of the same compiled function
(issue 21's speed rows; BUILD_NOTES.md §5b).

Command: python -m experiments.certify_speed [OUT.json]   (after experiments.train_models;
         MNIST from $ADVJAX_DATA_DIR; about 2 min on 2 CPU cores)
"""

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from advjax import adapt, certify, checkpoint, data


def measure(opts, w, x, y, n_loop: int = 50) -> dict:
  """img/s of the batch (first, warm) and of a loop over single images."""
  lo, hi = np.zeros(x.shape[1:], np.float32), np.ones(x.shape[1:], np.float32)
  f = lambda xs, ys: jax.block_until_ready(certify.batch(
      w.apply, w.params, jnp.asarray(xs), jnp.asarray(ys), lo, hi, opts).l2)
  t = time.perf_counter()
  f(x, y)
  first = time.perf_counter() - t
  t = time.perf_counter()
  r = f(x, y)
  warm = time.perf_counter() - t
  f(x[:1], y[:1])  # compile the one-image shape
  t = time.perf_counter()
  loop = [f(x[i:i + 1], y[i:i + 1]) for i in range(n_loop)]
  per = (time.perf_counter() - t) / n_loop
  return dict(first_s=first, warm_s=warm, batch_img_s=len(x) / warm,
              first_img_s=len(x) / first, loop_img_s=1 / per, lead=per * len(x) / warm,
              same=bool(np.array_equal(np.asarray(r)[:n_loop], np.concatenate(loop))),
              mean_l2=float(np.mean(r)))


def main() -> None:
  model, params, _ = checkpoint.load("runs/models/seed0/FC100-100-10")
  te = data.load("mnist", "test")
  x, y = te.x[:1000], te.y[:1000].astype(np.int32)
  w = adapt.wrap((model.apply, params), x.shape[1:])
  out = {tag: measure(o, w, x, y) for tag, o in (
      ("crown", certify.CertifyOptions()), ("crown rtol 0.01", certify.CertifyOptions(rtol=0.01)))}
  print(json.dumps(out, indent=1))
  if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
