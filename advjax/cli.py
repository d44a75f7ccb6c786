"""The `advjax` command line: the one thin shell in the package that parses args.

  advjax attack --checkpoint runs/models/FC100-100-10 --split test \\
      --output runs/attacks/FC100-100-10-test.npz

runs the §4.1 attack (`advjax.attacks.lbfgs`) over a dataset split with
`advjax.driver.run` (batched, sharded over all devices, resumable: rerun the
same command after an interruption) and writes one .npz with x_adv, r, success,
target, label, distortion, l2, c, iterations, solves and index.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _parser() -> argparse.ArgumentParser:
  """The argument parser of `advjax`."""
  ap = argparse.ArgumentParser(prog="advjax", description=__doc__.split("\n")[0])
  sub = ap.add_subparsers(dest="command", required=True)
  a = sub.add_parser("attack", help="box-constrained L-BFGS attack on a dataset split")
  a.add_argument("--checkpoint", required=True, help="folder from advjax.checkpoint.save")
  a.add_argument("--output", required=True, help=".npz file to write")
  a.add_argument("--work-dir", help="per-batch parts for resuming (default OUTPUT.parts)")
  a.add_argument("--dataset", default="mnist")
  a.add_argument("--split", default="test", choices=("train", "test"))
  a.add_argument("--data-dir", default=None, help="IDX folder (default $ADVJAX_DATA_DIR)")
  a.add_argument("--start", type=int, default=0, help="first example")
  a.add_argument("--n", type=int, default=None, help="number of examples (default all)")
  a.add_argument("--only-correct", action="store_true",
                 help="attack only examples the model classifies correctly")
  a.add_argument("--targets", default="random", choices=("random", "all", "logits"),
                 help="random wrong labels (the paper), or untargeted: the closest "
                 "over all labels / the runner-up logit")
  a.add_argument("--seed", type=int, default=0, help="PRNG seed of random targets")
  a.add_argument("--batch-size", type=int, default=128)
  a.add_argument("--solver", default="pqn", choices=("pqn", "jaxopt"))
  a.add_argument("--bisect-steps", type=int, default=10)
  a.add_argument("--maxiter", type=int, default=10)
  a.add_argument("--stop-after", type=int, default=None, help="stop after k batches")
  a.add_argument("--distributed", action="store_true",
                 help="call jax.distributed.initialize() first (multi-host)")
  a.add_argument("--no-progress", action="store_true")
  return ap


def attack(args: argparse.Namespace) -> int:
  """`advjax attack`: load, pick examples and targets, run the driver, save."""
  import jax
  if args.distributed:
    jax.distributed.initialize()
  from advjax import attacks, checkpoint, data, driver, train
  model, params, _ = checkpoint.load(args.checkpoint)
  ds = data.load(args.dataset, args.split, args.data_dir)
  fn = jax.jit(lambda x: model.apply(params, x))
  stop = len(ds.y) if args.n is None else min(len(ds.y), args.start + args.n)
  index = np.arange(args.start, stop)
  if args.only_correct:
    index = index[train.predict(model, params, ds.x[index]) == ds.y[index]]
  x, y = ds.x[index], ds.y[index]
  target, opts = None, dict(untargeted=args.targets)
  if args.targets == "random":
    target = np.asarray(attacks.random_targets(jax.random.PRNGKey(args.seed), y,
                                               model.num_classes))
    opts = {}
  work = args.work_dir or args.output + ".parts"
  res = driver.run(fn, x, target, work, label=y, index=index,
                   batch_size=args.batch_size, stop_after=args.stop_after,
                   progress=not args.no_progress, solver=args.solver,
                   bisect_steps=args.bisect_steps, maxiter=args.maxiter, **opts)
  if not driver.is_complete(work):
    print(f"stopped early: {len(res.get('index', []))} of {len(index)} examples "
          f"done in {work}; rerun the same command to resume.")
    return 0
  if jax.process_index() == 0:
    driver.save(args.output, res)
    print(json.dumps(dict(output=args.output, n=int(len(res["index"])),
                          success=float(res["success"].mean()),
                          mean_distortion=float(res["distortion"].mean()))))
  return 0


def main(argv: list[str] | None = None) -> int:
  """Entry point of the `advjax` console script."""
  args = _parser().parse_args(argv)
  if args.command == "attack":
    return attack(args)
  return 2


if __name__ == "__main__":
  sys.exit(main())
