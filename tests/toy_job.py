"""A user's own per-example job in one file: fixed-norm noise as an "attack".

Importing this module registers the job 'noise'; `driver.execute` runs it and
`advjax attack --import toy_job --method noise --noise-l2 0.5 ...` offers it.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from advjax import adapt, criteria
from advjax.runs import jobs


class NoiseOptions(NamedTuple):
  """Options of the noise job.

  Attributes:
    l2: the L2 norm of the noise added to each example (before clipping).
    seed: the noise's PRNG seed.
  """
  l2: float = 1.0
  seed: int = 0


class NoiseResult(NamedTuple):
  x_adv: jax.Array
  success: jax.Array
  distortion: jax.Array
  target: jax.Array  # the label reached (targeted) or left


def noise(options=None, *, targeted=True, untargeted="all", key=None) -> jobs.Job:
  """x plus Gaussian noise of norm `l2`, clipped to the box; success when the
  prediction is the target (targeted) or not the label."""
  del key
  options = NoiseOptions() if options is None else options
  if not options.l2 > 0:
    raise ValueError(f"l2={options.l2!r}: must be > 0.")
  if not targeted and untargeted != "all":
    raise ValueError(f"the noise job runs untargeted 'all' only, not {untargeted!r}.")

  def fn(pb, x, lo, hi, target, label, _):
    r = jax.random.normal(jax.random.PRNGKey(options.seed), x.shape)
    r = r * (options.l2 / criteria.l2(r)).reshape((-1,) + (1,) * (x.ndim - 1))
    x_adv = jnp.clip(x + r, lo, hi)
    l = target if targeted else adapt.labels_or_prediction(pb.apply, pb.params, x, label)
    success, _ = criteria.verdict(adapt.logits(pb.apply, pb.params, x_adv), l,
                                  away=not targeted)
    return NoiseResult(x_adv, success, criteria.rms(x_adv - x), l)
  return jobs.Job("noise", fn, NoiseResult._fields,
                  {"options": options._asdict(), "untargeted": None if targeted else "all"})


jobs.register(jobs.Method("noise", "attack", noise, NoiseOptions, prefix="noise-",
                          help="Gaussian noise of a given L2 norm (tests/toy_job.py)"),
              replace=True)
