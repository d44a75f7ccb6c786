"""The per-example jobs the driver runs: the §4.1 attack and DDN (and, in
`advjax.certify`, the certified radius)."""

from __future__ import annotations

import jax.numpy as jnp

from advjax import adapt
from advjax.attack import ddn as ddn_lib
from advjax.attack import box_lbfgs as lbfgs, targets
from advjax.attack.options import AttackOptions
from advjax.runs import identity
from advjax.runs.driver import Job


def attack(options: AttackOptions | None, *, targeted: bool, untargeted: str = "all",
           key=None) -> Job:
  """The §4.1 attack as a job (`attacks.lbfgs` on each batch)."""
  options = lbfgs._checked(AttackOptions() if options is None else options)  # pylint: disable=protected-access
  if not targeted:
    targets.check_mode(untargeted, key)

  def fn(pb, x, lo, hi, target, label, k):
    return lbfgs.solve_batch(pb.apply, pb.params, pb.num_classes, options, x, lo, hi,
                             target, label, untargeted, k)
  return Job("lbfgs", fn, lbfgs.AttackResult._fields,
             {"options": identity.options(options),
              "untargeted": None if targeted else untargeted})


def ddn(options: ddn_lib.DDNOptions = ddn_lib.DDNOptions(), *, targeted: bool) -> Job:
  """DDN as a job (`advjax.ddn.ddn` on each batch): towards the targets, or
  (untargeted) away from the labels, the prediction where none are given."""
  options = options.check()

  def fn(pb, x, lo, hi, target, label, _):
    if targeted:
      l = target
    elif label is not None:
      l = label
    else:
      l = jnp.argmax(adapt.logits(pb.apply, pb.params, x), -1).astype(jnp.int32)
    return ddn_lib._batch_jit(pb.apply, options, pb.params, x, l, lo, hi, not targeted)  # pylint: disable=protected-access
  return Job("ddn", fn, ddn_lib.DDNResult._fields,
             {"options": options._asdict(), "untargeted": None if targeted else "away"})


def certify(options, pb) -> Job:
  """The certified radius (`advjax.certify.batch`) as a job: certifies each
  example's label (given, else the model's prediction)."""
  from advjax import certify as cert  # pylint: disable=import-outside-toplevel
  options = options.check()
  apply, params = pb.model.apply, pb.model.params  # as written: bounds need no rewrites
  lip = cert.lipschitz_constants(apply, params) if options.method == "lipschitz" else None

  def fn(pb_, x, lo, hi, target, label, _):
    del pb_, target
    if label is None:
      label = jnp.argmax(adapt.logits(apply, params, x), -1).astype(jnp.int32)
    return cert.batch(apply, params, x, label, lo, hi, options, lip)
  fields = tuple(f for f in cert.CertifyResult._fields if f != "method")
  return Job("certify", fn, fields, {"options": identity.certify_options(options)})
