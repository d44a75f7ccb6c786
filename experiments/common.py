"""The one experiment harness: config type, flags, overrides, JSON and Markdown.

Every experiment is a module `experiments/<name>.py` with its config in
`experiments/configs/<name>.py`, run as `python -m experiments.<name>`: it is
`run(cfg, workdir) -> results`, a `markdown(results, cfg)` and a thin `main`:

    def main(argv=None):
      return common.main(run, config, argv, markdown=markdown)

`main` parses `--quick`, `--config.FIELD=VALUE` (dotted paths into nested
dataclasses and NamedTuples, coerced to the field's type), `--only NAME...`
and `--workdir`, then `execute` writes config.json (the config, a command that
reproduces the run as written, the code version), calls `run`, and writes
results.json and results.md (a QUICK run says so at the top). A run over
several items (cells, models, seeds, steps) loops with `save_each`, which
writes the results so far after each item. Tests and `reproduce.py` call
`run` or `execute` directly, never argv strings.

Where results go (so that no README command changes a tracked file):
experiments/results/<name>/ for a full run of the committed config (any
number of seeds), experiments/results/quick/<name>/ for `--quick`,
experiments/results/partial/<name>-<what differs>/ for `--only` or any other
override (quick and partial folders are git-ignored), or `--workdir`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import sys
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from advjax import checkpoint
from advjax.runs import identity
# Re-exported: the harness's override API lives in overrides.py.
from experiments.overrides import (coerce, diff, fields, format_value,  # noqa: F401
                                  is_record, override)

RESULTS = os.path.join("experiments", "results")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Fields every experiment config has (each `configs/<name>.py` subclasses it).

  Attributes:
    quick: the seconds-sized run (tiny slices; results say QUICK).
    seeds: training seeds; models of seed s live in <runs_dir>/models/seed<s>/.
    n_train: first n training images used (None: all 60,000).
    n_test: first n test images used (None: all 10,000).
    data_dir: IDX folder (None: the dataset's variable, e.g. $ADVJAX_DATA_DIR,
      then TFDS).
    dataset: 'mnist' (the paper's) or 'fashion_mnist'.
    runs_dir: checkpoints and caches (default runs/, quick runs/quick/).
    progress: show progress bars.
    only: a partial run of these rows (models, variants, cells); written to
      experiments/results/partial/, never over the committed table.
  """
  quick: bool = False
  seeds: tuple[int, ...] = (0,)
  n_train: int | None = None
  n_test: int | None = None
  data_dir: str | None = None
  dataset: str = "mnist"  # or 'fashion_mnist' (advjax.data.DATASETS)
  runs_dir: str = "runs"
  progress: bool = True
  only: tuple[str, ...] = ()

  def models_dir(self, seed: int) -> str:
    """Checkpoint folder of the models trained with seed index `seed`
    (runs/models/seed<s>; another dataset's under runs/models_<dataset>/)."""
    models = "models" if self.dataset == "mnist" else f"models_{self.dataset}"
    return os.path.join(self.runs_dir, models, f"seed{seed}")

  def selected(self, names) -> tuple:
    """`names` restricted to `only` (all of them when `only` is empty)."""
    unknown = set(self.only) - set(names)
    if unknown:
      raise ValueError(f"--only {sorted(unknown)}: not rows of this experiment; "
                       f"known: {list(names)}.")
    return tuple(n for n in names if not self.only or n in self.only)


def base(quick: bool) -> dict:
  """The ExperimentConfig fields that depend on the size: pass as **kwargs."""
  return {"quick": quick, "runs_dir": os.path.join("runs", "quick") if quick else "runs"}


def command(config_module, cfg: ExperimentConfig, workdir: str | None = None) -> str:
  """A command line that reproduces `cfg` exactly, as written:
  `python -m experiments.<name> ...` (the config module's name)."""
  env = ""
  if cfg.data_dir is None and os.environ.get("ADVJAX_DATA_DIR"):
    env = "ADVJAX_DATA_DIR=" + shlex.quote(os.environ["ADVJAX_DATA_DIR"]) + " "
  parts = ["python", "-m", f"experiments.{name_of(config_module)}"]
  parts += ["--quick"] if cfg.quick else []
  for path, v in diff(config_module.get_config(cfg.quick), cfg):
    if path == "only":
      parts += ["--only", *map(shlex.quote, v)]
      continue
    try:
      coerce(format_value(v), v, path)
    except ValueError:  # records in tuples: say so rather than mis-record
      parts.append(f"'<{path} changed in code>'")
      continue
    parts.append(shlex.quote(f"--config.{path}={format_value(v)}"))
  default = default_workdir(config_module, cfg)
  if workdir and os.path.normpath(workdir) != os.path.normpath(default):
    parts += ["--workdir", shlex.quote(workdir)]
  return env + " ".join(parts)


# ---------------------------------------------------------------- writing

def plain(x: Any) -> Any:
  """Makes configs and results JSON-ready (dataclasses, NamedTuples, numpy)."""
  if is_record(x):
    return {f: plain(getattr(x, f)) for f in fields(x)}
  if isinstance(x, dict):
    return {str(k): plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [plain(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return x


def dump_json(path: str, obj: Any) -> None:
  """Writes JSON atomically (an interrupt never leaves a half-written file)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  checkpoint.atomic_write(path, json.dumps(plain(obj), indent=2).encode())


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


# Fields that do not change what a results table means: a run differing from
# the default config in these only still writes the committed folder.
NEUTRAL = ("seeds", "progress", "data_dir", "runs_dir", "only")


def default_workdir(config_module, cfg: ExperimentConfig) -> str:
  """Where a run's results go unless --workdir says otherwise (module doc).

  Only the config as committed (up to NEUTRAL fields) writes
  experiments/results/<name>/; `--only` or any other override writes
  experiments/results/partial/<name>-<what differs>/ (git-ignored).
  """
  name = name_of(config_module)
  changed = [f"{p}={format_value(v)}" for p, v in
             diff(config_module.get_config(cfg.quick), cfg) if p not in NEUTRAL]
  if cfg.only or (changed and not cfg.quick):
    tag = "-".join([*(["quick"] if cfg.quick else []), name, *cfg.only, *changed])
    tag = "".join(c if c.isalnum() or c in "()-_.=," else "_" for c in tag)[:120]
    return os.path.join(RESULTS, "partial", tag)
  return os.path.join(RESULTS, *(("quick",) if cfg.quick else ()), name)


def quick_banner(cfg: ExperimentConfig) -> str:
  """The warning a quick run's results.md opens with."""
  if not cfg.quick:
    return ""
  sizes = ("each step's own quick sizes" if cfg.n_train is None else
           f"training images: {cfg.n_train}, test images: {cfg.n_test or 'all'}")
  return (f"> **QUICK run**: tiny sizes ({sizes}, "
          f"seeds {list(cfg.seeds)}, short training). It checks that the code "
          "runs; its numbers are NOT comparable with the paper's.\n\n")


def save_results(workdir: str, cfg: ExperimentConfig, results: dict,
                 markdown: Callable[[dict, Any], str], title: str) -> None:
  """results.json (every cell, code version, date) and results.md."""
  stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  dump_json(os.path.join(workdir, "results.json"),
            dict(results, quick=cfg.quick, date=stamp,
                 code_version=checkpoint.code_version()))
  text = f"# {title}\n\n{quick_banner(cfg)}{markdown(results, cfg)}"
  checkpoint.atomic_write(os.path.join(workdir, "results.md"), text.encode())


def save_each(items: Iterable, workdir: str, cfg: ExperimentConfig, config_module,
              markdown: Callable, results: Callable[[], dict]) -> Iterator:
  """Yields every item (cell, model, seed, step); once the loop's body has
  handled one, writes `results()` so far (marked incomplete: `execute` writes
  the complete ones), so that an interrupt loses one item at most."""
  for item in items:
    yield item
    save_results(workdir, cfg, dict(results(), complete=False), markdown,
                 config_module.TITLE)


def write_run_config(workdir: str, config_module, cfg, extra=None) -> None:
  """config.json: the config, the command that reproduces it, the code version."""
  dump_json(os.path.join(workdir, "config.json"),
            dict({"config": cfg, "command": command(config_module, cfg, workdir),
                  "code_version": checkpoint.code_version()}, **(extra or {})))


def name_of(config_module) -> str:
  """An experiment's name: its config module's, which is its script's
  (configs/table1.py: 'table1', run as `python -m experiments.table1`)."""
  return config_module.__name__.rsplit(".", 1)[-1]


def is_complete(workdir: str, cfg: ExperimentConfig) -> bool:
  """Whether `workdir` holds the finished results of exactly `cfg` (resume)."""
  try:
    res = read_json(os.path.join(workdir, "results.json"))
    conf = read_json(os.path.join(workdir, "config.json"))
  except (OSError, ValueError):
    return False
  return bool(res.get("complete")) and conf.get("config") == json.loads(
      json.dumps(plain(cfg)))


def execute(run: Callable, config_module, cfg: ExperimentConfig,
            workdir: str | None = None, *, markdown: Callable) -> dict:
  """Writes config.json, calls `run(cfg, workdir)`, writes the results."""
  workdir = workdir or default_workdir(config_module, cfg)
  write_run_config(workdir, config_module, cfg)
  results = run(cfg, workdir)
  # The training-set size is known once the data is loaded: record it too.
  write_run_config(workdir, config_module, cfg,
                   {"n_train_used": results.get("n_train_used")})
  results = dict(results, complete=True)
  save_results(workdir, cfg, results, markdown, config_module.TITLE)
  return results


def parse_flags(argv: list[str] | None, config_module, doc: str | None = None):
  """(cfg, workdir) from the shared flags (see the module docstring)."""
  fields_help = ", ".join(fields(config_module.get_config(False)))
  p = argparse.ArgumentParser(
      description=doc or config_module.__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="--config.FIELD=VALUE overrides a config field (dotted paths into "
             f"nested ones, e.g. --config.attack.maxiter=50); fields: {fields_help}.")
  p.add_argument("--quick", action="store_true", help="seconds-sized run")
  p.add_argument("--only", nargs="+", default=None, help="a partial run of these rows")
  p.add_argument("--workdir", default=None, help="results folder")
  args, rest = p.parse_known_args(argv)
  cfg = config_module.get_config(args.quick)
  for a in rest:
    if not a.startswith("--config.") or "=" not in a:
      p.error(f"unrecognised argument {a!r}; use --config.FIELD=VALUE "
              f"(fields: {fields(cfg)}).")
    path, text = a[len("--config."):].split("=", 1)
    try:
      cfg = override(cfg, path, text)
    except ValueError as e:
      p.error(str(e))
  if args.only:
    cfg = dataclasses.replace(cfg, only=tuple(args.only))
  return cfg, args.workdir


def main(run: Callable, config_module, argv: list[str] | None = None, *,
         markdown: Callable) -> dict:
  """The command line of an experiment script: parse, `execute`, print."""
  cfg, workdir = parse_flags(sys.argv[1:] if argv is None else argv, config_module)
  results = execute(run, config_module, cfg, workdir, markdown=markdown)
  print(quick_banner(cfg) + markdown(results, cfg))
  return results


# ---------------------------------------------------------------- data, models, stats

def load_data(cfg: ExperimentConfig):
  """(train, test) of cfg.dataset: the first cfg.n_train / cfg.n_test images
  (None: all, 60,000 / 10,000 for MNIST)."""
  from advjax import data  # pylint: disable=import-outside-toplevel
  tr = data.load(cfg.dataset, "train", cfg.data_dir)
  te = data.load(cfg.dataset, "test", cfg.data_dir)
  for n, name in ((cfg.n_train, "n_train"), (cfg.n_test, "n_test")):
    if n is not None and n <= 0:
      raise ValueError(f"{name} must be positive or None (all), got {n}.")
  tr = tr if cfg.n_train is None else data.subset(tr, np.arange(min(cfg.n_train, len(tr.x))))
  te = te if cfg.n_test is None else data.subset(te, np.arange(min(cfg.n_test, len(te.x))))
  return tr, te


def load_model(cfg: ExperimentConfig, seed: int, folder: str):
  """(model, params, meta) of a checkpoint trained by experiments.train_models."""
  path = os.path.join(cfg.models_dir(seed), folder)
  if not os.path.exists(os.path.join(path, checkpoint.META)):
    raise checkpoint.CheckpointError(
        f"{path} holds no trained model; train it first: python -m "
        f"experiments.train_models{' --quick' if cfg.quick else ''} "
        f"--config.seeds={format_value(cfg.seeds)}")
  return checkpoint.load(path)


def _attack_key(attack):
  """The attack options as cached: fields added later at their old behaviour are
  left out (`advjax.runs.identity`), so existing caches stay found."""
  return attack if attack is None else identity.options(attack)


def cache_dir(cfg: ExperimentConfig, table: str, seed: int, model: str,
              n: int | None = None) -> str:
  """The `advjax.runs.driver` folder caching one adversarial set (resumable).

  What defines the set besides the model (the data sizes, the number of
  images `n` (default cfg.n_images), the protocol's seed, the attack options,
  the batch size) is digested into the folder's name, so an override never
  lands in (and is never refused by) the committed run's cache.
  """
  key = {"dataset": getattr(cfg, "dataset", "mnist"), "n_train": cfg.n_train,
         "n_test": cfg.n_test, "n": getattr(cfg, "n_images", None) if n is None else n,
         "seed": getattr(cfg, "seed", None), "attack": _attack_key(getattr(cfg, "attack", None)),
         "batch_size": getattr(cfg, "batch_size", None)}
  tag = identity.fingerprint(plain(key))[:10]
  return os.path.join(cfg.runs_dir, "adv", table, tag, f"seed{seed}", model)


def adversarial_sets(cfg: ExperimentConfig, ds, seed: int, models, table: str) -> dict:
  """name -> (model, params, meta, adversarial set) of one seed's checkpoints.

  The §4.2 protocol (`protocol.adversarial_set`) on `ds`, cached per `table`
  (Table 2 passes "table1" to reuse Table 1's sets).
  """
  from advjax import protocol  # pylint: disable=import-outside-toplevel
  out = {}
  for name in models:
    model, params, meta = load_model(cfg, seed, name)
    s = protocol.adversarial_set(model, params, ds, cfg.n_images, cfg.seed,
                                 cache_dir(cfg, table, seed, name), cfg.attack,
                                 cfg.batch_size, cfg.progress)
    out[name] = (model, params, meta, s)
  return out


def summarize(values) -> dict:
  """mean, sd (ddof 1; 0 for one value), n and the per-seed values."""
  v = [float(x) for x in values]
  if not v:
    raise ValueError("summarize needs at least one value.")
  sd = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
  return {"mean": float(np.mean(v)), "sd": sd, "n": len(v), "values": v}


def mean_sd(f: dict, key: str, scale: float = 1.0, digits: int = 2) -> str:
  """'mean ± sd' of a `summarize` entry (× scale), or '—' where it is missing."""
  if key not in f:
    return "—"
  return f"{scale * f[key]['mean']:.{digits}f} ± {scale * f[key]['sd']:.{digits}f}"


def summarize_rows(rows: list[dict], key: str, names) -> dict:
  """{rows[key]: {name: summarize over that key's rows (one per seed)}}."""
  out: dict = {}
  for r in rows:
    out.setdefault(r[key], []).append(r)
  # A value is None where it does not exist (no successful example): skipped.
  vals = {k: {f: [r[f] for r in rs if r.get(f) is not None] for f in names}
          for k, rs in out.items()}
  return {k: {f: summarize(v) for f, v in fs.items() if v} for k, fs in vals.items()}


def summarize_matrices(ms: list[dict]) -> dict:
  """Cell-wise `summarize` of per-seed matrices {row: {col: value}}."""
  return {r: {c: summarize([m[r][c] for m in ms]) for c in ms[0][r]} for r in ms[0]}
