"""The `advjax` command line: the one thin shell in the package that parses args.

`advjax attack` and `advjax certify` run a registered per-example job
(`advjax.runs.jobs`: the §4.1 attack `lbfgs`, `ddn`, the certified radii, or a
user's own given by `--import MODULE`) over a dataset split with the job
engine (`advjax.runs.driver`: batched, sharded over all devices and processes,
resumable) and write one .npz. `--method` takes its choices from the registry,
and every field of a job's options is a flag with the same default. Errors are
one line on stderr and exit code 2; the whole job is checked before any runs.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import json
import os
import re
import sys
import typing

import numpy as np

from advjax import __version__
from advjax.attack.options import FLAT, PARTS
from advjax.runs import multihost
from advjax.runs.driver import BATCH_SIZE

EXAMPLE = """example:
  advjax attack --checkpoint runs/models/seed0/FC100-100-10 --split test \\
      --n 1000 --only-correct --targets random --output runs/adv-FC100.npz
  (rerun the same command after an interruption: it resumes from
  runs/adv-FC100.npz.parts/; with several hosts add --distributed)"""
CERTIFY_EXAMPLE = """example:
  advjax certify --checkpoint runs/models/seed0/FC100-100-10 --split test \\
      --n 1000 --method crown --output runs/cert-FC100.npz
  (resumable like advjax attack; the .npz holds l2, distortion, margin, label)"""


def _field_help(cls) -> dict[str, str]:
  """Per-field help of a NamedTuple, read from its docstring (written once there)."""
  doc = cls.__doc__.split("Attributes:")[1]
  out, name = {}, None
  for line in doc.splitlines():
    m = re.match(r"\s{4}(\w+): (.*)", line)
    if m:
      name, out[m.group(1)] = m.group(1), m.group(2)
    elif name and line.strip():
      out[name] += " " + line.strip()
  return {k: v.replace("%", "%%") for k, v in out.items()}  # argparse formats help


def _option_help() -> dict[str, str]:
  """Help of every flat attack option, from its part's docstring."""
  helps = {part: _field_help(cls) for part, cls in PARTS.items()}
  return {flat: helps[part][field] for flat, (part, field) in FLAT.items()}


def _bool(s: str) -> bool:
  """A strict boolean flag value (a typo is an error, never False)."""
  v = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
  if s.lower() not in v:
    raise argparse.ArgumentTypeError(f"{s!r}: use true or false")
  return v[s.lower()]


def _add_shared(a: argparse.ArgumentParser, verb: str) -> None:
  """The checkpoint, data, selection and batching flags of every command."""
  a.add_argument("--checkpoint", required=True,
                 help="model folder written by advjax.checkpoint.save")
  a.add_argument("--output", required=True, help=".npz file to write")
  a.add_argument("--work-dir", help="per-batch parts for resuming (default OUTPUT.parts)")
  a.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist"),
                 help="dataset of the split")
  a.add_argument("--split", default="test", choices=("train", "test"), help="split")
  a.add_argument("--data-dir", default=None,
                 help="IDX folder (default $ADVJAX_DATA_DIR, then MNIST's cached "
                 "download, then TFDS: advjax.data.load)")
  a.add_argument("--start", type=int, default=0, help="first example of the split")
  a.add_argument("--n", type=int, default=None, help="number of examples (default: to the end)")
  a.add_argument("--only-correct", action="store_true",
                 help=f"{verb} only examples the model classifies correctly")
  a.add_argument("--bounds", type=float, nargs=2, default=(0.0, 1.0),
                 metavar=("LO", "HI"), help="the input box")
  a.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                 help="examples per batch (a multiple of the device count)")
  a.add_argument("--stop-after", type=int, default=None,
                 help="stop after this many batches (resume later)")
  a.add_argument("--no-progress", action="store_true", help="no progress bar")
  a.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                 help="a module or .py file to import first: the jobs it registers "
                 "(advjax.runs.jobs.register) become --method choices")


def _add_multihost(a: argparse.ArgumentParser) -> None:
  """The jax.distributed flags."""
  d = a.add_argument_group("multi-host (jax.distributed)")
  d.add_argument("--distributed", action="store_true",
                 help="call jax.distributed.initialize() first; without the three "
                 "flags below jax detects SLURM/TPU/MPI clusters itself")
  d.add_argument("--coordinator", default=None, help="host:port of process 0")
  d.add_argument("--num-processes", type=int, default=None, help="number of processes")
  d.add_argument("--process-id", type=int, default=None, help="this process's id")
  d.add_argument("--peer-timeout", type=float, default=multihost.PEER_TIMEOUT,
                 help="seconds after which a silent peer (killed, crashed) stops this "
                 "process with one line (exit 3); rerun to resume")


def _flag_type(cls, field: str, default):
  """The argparse type of an options field: its default's, else its annotation's."""
  if isinstance(default, bool):
    return _bool
  if default is not None:
    return type(default)
  hint = typing.get_type_hints(cls).get(field)
  kinds = [t for t in typing.get_args(hint) or (hint,) if t is not type(None)]
  return kinds[0] if kinds else str


def _defaults(method) -> dict:
  """{field: default} of a registered job's option flags (fixed fields left out)."""
  d = method.options()
  values = d.flat() if hasattr(d, "flat") else d._asdict()
  return {k: v for k, v in values.items() if k not in method.fixed}


def _dest(method, field: str) -> str:
  """The argparse dest of an option field's flag."""
  return (method.prefix + field).replace("-", "_")


def _add_job_options(a: argparse.ArgumentParser, command: str) -> None:
  """One flag per option field of every job the command offers (--PREFIXFIELD),
  its default and help from the options record; shared prefixes share flags."""
  from advjax.runs import jobs  # pylint: disable=import-outside-toplevel
  added = set()
  for m in jobs.registered(command).values():
    d = m.options()
    helps = _option_help() if hasattr(d, "flat") else _field_help(type(d))
    fields = {k: v for k, v in _defaults(m).items() if _dest(m, k) not in added}
    if not fields:
      continue
    names = [n for n, o in jobs.registered(command).items() if o.prefix == m.prefix]
    g = a.add_argument_group(f"{type(d).__name__} (--method {', '.join(names)})")
    for field, default in fields.items():
      kind = _flag_type(type(d), field, default)
      g.add_argument("--" + m.prefix + field.replace("_", "-"), dest=_dest(m, field),
                     type=kind, default=default, help=helps.get(field),
                     **({"metavar": "BOOL"} if kind is _bool else {}))
      added.add(_dest(m, field))


def _add_method(a: argparse.ArgumentParser, command: str) -> None:
  """--method, its choices the registered jobs of the command."""
  from advjax.runs import jobs  # pylint: disable=import-outside-toplevel
  methods = jobs.registered(command)
  a.add_argument("--method", default=jobs.DEFAULTS[command], choices=tuple(methods),
                 help="; ".join(f"{n}: {m.help}" for n, m in methods.items()).replace(
                     "%", "%%"))


class _Format(argparse.ArgumentDefaultsHelpFormatter,
              argparse.RawDescriptionHelpFormatter):
  """Defaults shown in the help; the example epilog kept as written."""


def _parser() -> argparse.ArgumentParser:
  """The argument parser of `advjax`."""
  fmt = _Format
  ap = argparse.ArgumentParser(prog="advjax", description=__doc__.split("\n")[0],
                               formatter_class=fmt)
  ap.add_argument("--version", action="version", version=f"advjax {__version__}")
  sub = ap.add_subparsers(dest="command", required=True)
  a = sub.add_parser("attack", help="box-constrained L-BFGS attack on a dataset split",
                     description="The §4.1 attack over a dataset split, resumable.",
                     epilog=EXAMPLE, formatter_class=lambda prog: fmt(prog, width=100))
  _add_method(a, "attack")
  _add_shared(a, "attack")
  a.add_argument("--targets", default="random", choices=("random", "all", "logits"),
                 help="random wrong labels (the paper), or untargeted: the closest "
                 "over the other labels (see --joint, --screen) / the runner-up logit")
  a.add_argument("--seed", type=int, default=0, help="PRNG seed of random targets")
  _add_job_options(a, "attack")
  _add_multihost(a)
  c = sub.add_parser("certify", help="certified L2 radii on a dataset split",
                     description="Certified radii (the lower end of each example's "
                     "bracket) over a dataset split, resumable.",
                     epilog=CERTIFY_EXAMPLE, formatter_class=lambda prog: fmt(prog, width=100))
  _add_method(c, "certify")
  _add_shared(c, "certify")
  _add_job_options(c, "certify")
  _add_multihost(c)
  return ap


class UsageError(ValueError):
  """A command-line value that cannot work (reported as one line, exit 2)."""


def _check_args(args: argparse.Namespace, n_split: int) -> None:
  """Refuses a job that cannot run, before any attack."""
  if args.batch_size < 1:
    raise UsageError(f"--batch-size {args.batch_size}: must be >= 1.")
  if args.stop_after is not None and args.stop_after < 0:
    raise UsageError(f"--stop-after {args.stop_after}: must be >= 0 (omit it for all batches).")

  if args.n is not None and args.n < 1:
    raise UsageError(f"--n {args.n}: must be >= 1 (omit it for the whole split).")
  if not 0 <= args.start < n_split:
    raise UsageError(f"--start {args.start}: the {args.split} split has {n_split} "
                     f"examples, so --start must be in [0, {n_split}).")
  out = args.output
  if not out.endswith(".npz") or os.path.isdir(out):
    raise UsageError(f"--output {out!r}: must be a .npz file path (not a folder).")
  parent = os.path.dirname(os.path.abspath(out))
  try:
    os.makedirs(parent, exist_ok=True)
  except OSError as e:
    raise UsageError(f"--output {out!r}: cannot create {parent} ({e.strerror}).") from e
  if not os.access(parent, os.W_OK):
    raise UsageError(f"--output {out!r}: {parent} is not writable.")


def _distributed(args: argparse.Namespace) -> None:
  """jax.distributed.initialize with the explicit flags, or auto-detection."""
  import jax  # pylint: disable=import-outside-toplevel
  kw = {k: v for k, v in (("coordinator_address", args.coordinator),
                          ("num_processes", args.num_processes),
                          ("process_id", args.process_id)) if v is not None}
  jax.distributed.initialize(**kw)
  multihost.watchdog(args.peer_timeout)


def _select(args: argparse.Namespace):
  """(model, params, x, y, index) of the examples the flags select."""
  from advjax import checkpoint, data, models  # pylint: disable=import-outside-toplevel
  model, params, _ = checkpoint.load(args.checkpoint)
  ds = data.load(args.dataset, args.split, args.data_dir)
  _check_args(args, len(ds.y))
  stop = len(ds.y) if args.n is None else min(len(ds.y), args.start + args.n)
  index = np.arange(args.start, stop)
  if args.only_correct:
    index = index[models.predict(model, params, ds.x[index]) == ds.y[index]]
    if not len(index):
      raise UsageError(f"no example in [{args.start}, {stop}) is classified correctly.")
  return model, params, ds.x[index], ds.y[index], index


def _execute(args: argparse.Namespace, job, pb, index, key, summary) -> int:
  """Runs a job through the engine, saves the .npz on process 0, prints a line."""
  import jax  # pylint: disable=import-outside-toplevel
  from advjax.runs import driver  # pylint: disable=import-outside-toplevel
  work = args.work_dir or args.output + ".parts"
  res = driver.execute(job, pb, work, index=index, batch_size=args.batch_size,
                       stop_after=args.stop_after, progress=not args.no_progress, key=key)
  me = jax.process_index()
  multihost.end()  # every process together, before any of them leaves
  if me != 0:  # process 0 holds the parts and reports
    return 0
  if not driver.is_complete(work):
    print(f"stopped early: {len(res.get('index', []))} of {len(index)} examples "
          f"done in {work}; rerun the same command to resume.")
    return 0
  driver.save(args.output, res)
  print(json.dumps(dict(output=args.output, method=args.method, n=int(len(res["index"])),
                        **summary(res))))
  return 0


def _job(args: argparse.Namespace, targeted: bool, key):
  """The registered job of --method, its options from the flags, checked and
  named by flag."""
  from advjax.runs import jobs  # pylint: disable=import-outside-toplevel
  m = jobs.get(args.method)
  try:
    opts = m.options(**{f: getattr(args, _dest(m, f)) for f in _defaults(m)})
    return m.make(opts, targeted=targeted, untargeted=getattr(args, "targets", "all"),
                  key=key)
  except ValueError as e:  # "maxiter=0: must be >= 1." -> "--maxiter 0: must be >= 1."
    raise UsageError(re.sub(r"^(\w+)=", lambda g: "--" + m.prefix + g.group(1).replace(
        "_", "-") + " ", str(e))) from e


def _summary(command: str, res: dict) -> dict:
  """The printed line's figures: success and distortion, or certified radii."""
  if command == "certify" and "l2" in res:
    return dict(mean_certified_l2=float(res["l2"].mean()),
                mean_certified_rms=float(res["distortion"].mean()),
                certified_fraction=float((res["l2"] > 0).mean()))
  if command == "attack" and "success" in res:
    ok = res["success"].astype(bool)
    return dict(success=float(ok.mean()), mean_distortion_of_successes=float(
        res["distortion"][ok].mean()) if ok.any() else None)
  return {}


def certify(args: argparse.Namespace) -> int:
  """`advjax certify`: load, select, run the certificate job, save."""
  _check_distributed_flags(args)
  if args.distributed:
    _distributed(args)
  from advjax import inputs  # pylint: disable=import-outside-toplevel
  job = _job(args, False, None)
  model, params, x, y, index = _select(args)
  pb = inputs.problem((model.apply, params), x, tuple(args.bounds), label=y,
                      check_logits=False)
  return _execute(args, job, pb, index, None, functools.partial(_summary, "certify"))


def attack(args: argparse.Namespace) -> int:
  """`advjax attack`: load, pick examples and targets, run the engine, save."""
  _check_distributed_flags(args)
  if args.distributed:
    _distributed(args)
  import jax  # pylint: disable=import-outside-toplevel
  from advjax import attack as attack_lib, inputs  # pylint: disable=import-outside-toplevel
  key = jax.random.PRNGKey(args.seed)
  job = _job(args, args.targets == "random", key)
  model, params, x, y, index = _select(args)
  target = None
  if args.targets == "random":
    target = attack_lib.seeded_targets(args.seed, y, model.num_classes)  # as the experiments
  pb = inputs.problem((model.apply, params), x, tuple(args.bounds), target=target, label=y,
                      check_logits=False)
  return _execute(args, job, pb, index,
                  key if job.identity.get("untargeted") == "random" else None,
                  functools.partial(_summary, "attack"))


def _check_distributed_flags(args: argparse.Namespace) -> None:
  """--coordinator, --num-processes and --process-id mean nothing without --distributed."""
  given = [f for f, v in (("--coordinator", args.coordinator),
                          ("--num-processes", args.num_processes),
                          ("--process-id", args.process_id)) if v is not None]
  if given and not args.distributed:
    raise UsageError(f"{', '.join(given)} given without --distributed; add --distributed "
                     "to run as one process of a multi-process job.")


def _import_jobs(argv: list[str] | None) -> None:
  """Imports the modules (or .py files) named by --import, so that the jobs they
  register are --method choices."""
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--import", dest="imports", action="append", default=[])
  for name in pre.parse_known_args(argv)[0].imports:
    if name.endswith(".py"):
      spec = importlib.util.spec_from_file_location(
          os.path.splitext(os.path.basename(name))[0], name)
      if spec is None or not os.path.exists(name):
        raise ImportError(f"--import {name}: no such file.")
      spec.loader.exec_module(importlib.util.module_from_spec(spec))
    else:
      importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
  """Entry point of the `advjax` console script."""
  try:
    _import_jobs(argv)
  except Exception as e:  # pylint: disable=broad-except  (a user's module, any error)
    print(f"advjax: error: --import: {e}".splitlines()[0], file=sys.stderr)
    return 2
  args = _parser().parse_args(argv)
  try:
    return {"attack": attack, "certify": certify}[args.command](args)
  # UsageError, CheckpointError, DataError are ValueErrors; ImportError: a missing
  # extra (e.g. --solver jaxopt); RuntimeError: jax.distributed could not start.
  except (ValueError, OSError, ImportError, RuntimeError) as e:
    print(f"advjax {args.command}: error: {e}".splitlines()[0], file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
