"""Per-example jobs and their registry: what the engine runs and what
`advjax attack|certify --method NAME` offers.

A `Job` is a small record (a batched function of the checked problem and one
batch, its result fields, its identity); `driver.execute` runs any of them.
Every builder has one shape, `make(options=None, *, targeted, untargeted, key)
-> Job`, and is registered once as a `Method`: the §4.1 attack ('lbfgs'), DDN
('ddn') and the certified radius (one name per bound: 'crown', 'ibp', ...).
A user's job is one module that calls `register`; the command line takes it
with `--import MODULE` (see `tests/toy_job.py`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax

from advjax import adapt, certify as cert
from advjax.attack import box_lbfgs, ddn as ddn_lib, targets
from advjax.attack.options import AttackOptions
from advjax.runs import identity


class Job(NamedTuple):
  """One per-example job.

  Attributes:
    method: its name in the run's identity ('lbfgs', 'ddn', 'certify').
    fn: fn(pb, x, lo, hi, target, label, key) -> a NamedTuple of (B, ...)
      arrays; pb the validated `inputs.Problem` (model and K), the rest this
      batch's (possibly global, sharded) arrays; lo, hi of one input's shape
      or per example; key a PRNG key for this batch or None.
    fields: the result fields written.
    identity: JSON-able parts that name the job beside its inputs (options).
  """
  method: str
  fn: Callable
  fields: tuple
  identity: dict


class Method(NamedTuple):
  """A registered job: one `--method` value of the command line.

  Attributes:
    name: the `--method` value.
    command: the command that offers it, 'attack' or 'certify'.
    make: make(options, *, targeted, untargeted, key) -> Job.
    options: options(**fields) -> the options record `make` takes; options()
      gives the defaults, whose fields (`.flat()` where the record has it)
      become the command's flags.
    prefix: the flags' prefix ('ddn-' gives --ddn-steps); methods of one
      command sharing a prefix share their flags.
    fixed: fields that the name fixes (not flags), e.g. ('method',).
    help: one line for --help.
  """
  name: str
  command: str
  make: Callable[..., Job]
  options: Callable[..., Any]
  prefix: str = ""
  fixed: tuple = ()
  help: str = ""


COMMANDS = ("attack", "certify")
DEFAULTS = {"attack": "lbfgs", "certify": cert.CertifyOptions().method}  # --method's
_REGISTRY: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
  """Adds `method` to the registry (ValueError if its name is taken, unless
  `replace`); returns it."""
  if method.command not in COMMANDS:
    raise ValueError(f"command={method.command!r}; choose one of {COMMANDS}.")
  if method.name in _REGISTRY and not replace:
    raise ValueError(f"a job named {method.name!r} is registered already; pick "
                     "another name or pass replace=True.")
  _REGISTRY[method.name] = method
  return method


def unregister(name: str) -> None:
  """Removes a registered job (KeyError naming it if absent)."""
  del _REGISTRY[name]


def registered(command: str | None = None) -> dict[str, Method]:
  """The registered jobs by name, in registration order (of one command)."""
  return {k: m for k, m in _REGISTRY.items() if command in (None, m.command)}


def get(name: str) -> Method:
  """The registered job `name`; ValueError listing the names if absent."""
  if name not in _REGISTRY:
    raise ValueError(f"no job named {name!r}; registered: {', '.join(_REGISTRY)}.")
  return _REGISTRY[name]


def attack(options: AttackOptions | None = None, *, targeted: bool = True,
           untargeted: str = "all", key=None) -> Job:
  """The §4.1 attack as a job (`advjax.attack.lbfgs` on each batch)."""
  options = box_lbfgs.checked_options(AttackOptions() if options is None else options)
  if not targeted:
    targets.check_mode(untargeted, key)

  def fn(pb, x, lo, hi, target, label, k):
    return box_lbfgs.solve_batch(pb.apply, pb.params, pb.num_classes, options, x, lo, hi,
                                 target, label, untargeted, k)
  return Job("lbfgs", fn, box_lbfgs.AttackResult._fields,
             {"options": identity.options(options),
              "untargeted": None if targeted else untargeted})


def ddn(options: ddn_lib.DDNOptions | None = None, *, targeted: bool = True,
        untargeted: str = "all", key=None) -> Job:
  """DDN as a job (`advjax.attack.ddn.ddn` on each batch): towards the
  targets, or (untargeted='all') away from the labels, the prediction where
  none are given."""
  del key  # deterministic
  options = (ddn_lib.DDNOptions() if options is None else options).check()
  if not targeted and untargeted != "all":
    raise ValueError(f"DDN runs towards targets or away from the label (untargeted "
                     f"'all'), not untargeted {untargeted!r}.")

  def fn(pb, x, lo, hi, target, label, _):
    l = target if targeted else adapt.labels_or_prediction(pb.apply, pb.params, x, label)
    return ddn_lib.batch_jit(pb.apply, options, pb.params, x, l, lo, hi, not targeted)
  return Job("ddn", fn, ddn_lib.DDNResult._fields,
             {"options": options._asdict(), "untargeted": None if targeted else "away"})


def certify(options: cert.CertifyOptions | None = None, *, targeted: bool = False,
            untargeted: str = "all", key=None) -> Job:
  """The certified radius (`advjax.certify.batch`) as a job: certifies each
  example's label (given, else the model's prediction); targets are not its
  question, so `targeted` must be False."""
  del untargeted, key
  if targeted:
    raise ValueError("a certified radius certifies the label; run it without targets.")
  options = (cert.CertifyOptions() if options is None else options).check()
  seen = {}  # the layer bounds, computed once per model *and weights* (by value)

  def fn(pb, x, lo, hi, target, label, _):
    del target
    apply, params = pb.model.apply, pb.model.params  # as written: bounds need no rewrites
    if options.method == "lipschitz":
      key = (apply, adapt.digest(*jax.tree_util.tree_leaves(params)))
      if seen.get("key") != key:  # weights changed in place get new bounds
        seen.update(key=key, lip=cert.lipschitz_constants(apply, params))
    label = adapt.labels_or_prediction(apply, params, x, label)
    return cert.batch(apply, params, x, label, lo, hi, options, seen.get("lip"))
  fields = tuple(f for f in cert.CertifyResult._fields if f != "method")
  return Job("certify", fn, fields, identity.certify_job(options))


register(Method("lbfgs", "attack", attack, AttackOptions,
                help="the paper's box-constrained L-BFGS attack (advjax.attack.lbfgs)"))
register(Method("ddn", "attack", ddn, ddn_lib.DDNOptions, prefix="ddn-",
                help="DDN alone (advjax.attack.ddn.ddn)"))
for _m in cert.METHODS:
  register(Method(_m, "certify", certify, functools.partial(cert.CertifyOptions, method=_m),
                  prefix="cert-", fixed=("method",),
                  help=f"the certified radius by {_m!r} (advjax.certify.radius)"))
