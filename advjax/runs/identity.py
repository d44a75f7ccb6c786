"""What names a job, and how records of older advjax versions are read.

A job's identity is a dict of parts (model, inputs, targets, box, method,
options, ...), so that a refusal can name what differs; its `fingerprint` is
one digest of it, written into every part file.

Results recorded before an option existed must keep being found (driver jobs
resume, experiment caches are reused). That history lives here, not in the
public options: an option at the value that behaves as advjax did before it
existed is left out (`LEGACY`), and so is an option that has no effect while
another is 0 (`INERT`). Records of schema 1 (before the engine ran other jobs
than the attack) are migrated to schema 2 by `migrate`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import numpy as np

from advjax import adapt
from advjax.certify.options import SEARCHED

SCHEMA = 2

# Fields added after results were first cached, at the value that behaves as
# advjax did before they existed.
LEGACY = {"joint": False, "first_order_steps": 0, "first_order_alpha": 1.0,
          "first_order_gamma": 0.05, "first_order_unit": "input", "scale": "raw"}
# Fields that have no effect while another is 0: left out of the identity then.
INERT = {"first_order_steps": ("first_order_alpha", "first_order_gamma", "first_order_unit")}


def options(opts: Any) -> dict:
  """The attack's options (`AttackOptions` or a recorded flat dict) as a dict
  that is equal across advjax versions for the same behaviour."""
  d = opts.flat() if hasattr(opts, "flat") else dict(opts)
  # root_steps was `polish_steps or 10` before it was its own option; it has no
  # effect without a first-order pass or refine steps.
  roots = d.pop("root_steps", None)
  legacy_roots = d.get("polish_steps") or 10
  fo = d.get("first_order_steps", LEGACY["first_order_steps"])
  if roots is not None and roots != legacy_roots and (fo or d.get("refine_steps")):
    d["root_steps"] = roots
  inert = {f for k, fs in INERT.items() if d.get(k, LEGACY.get(k)) == 0 for f in fs}
  return {k: v for k, v in d.items()
          if k not in inert and not (k in LEGACY and v == LEGACY[k])}


# Certificate options added after radii were first recorded, at their old behaviour.
CERTIFY_LEGACY = {"lipschitz_floor": False, "rtol": 0.0, "lipschitz_units": False,
                  "patches": False, "patch_budget": 1 << 22, "alpha_scope": "output"}
# Options added later that change some methods only: left out of the others'
# identity, so their records resume (the slopes' scope changes α-CROWN only).
CERTIFY_USED_BY = {"alpha_scope": ("alpha-crown",)}


def certify_options(opts: Any) -> dict:
  """`CertifyOptions` as a dict equal across advjax versions for the same behaviour."""
  d = opts._asdict() if hasattr(opts, "_asdict") else dict(opts)
  m = d.get("method")
  return {k: v for k, v in d.items() if m in CERTIFY_USED_BY.get(k, (m,))
          and not (k in CERTIFY_LEGACY and v == CERTIFY_LEGACY[k])}


# The ε search's rule (`certify.search`); records without it were searched by
# bisection in log ε and give other radii (within rtol), so they do not resume.
CERTIFY_SEARCH = "secant"


def certify_job(opts: Any) -> dict:
  """The identity parts of a certify job: its options and, where a search
  finds the radius, the search's rule."""
  d = {"options": certify_options(opts)}
  if d["options"]["method"] in SEARCHED:
    d["search"] = CERTIFY_SEARCH
  return d


def migrate(job: dict) -> dict:
  """A recorded job identity in today's form (schema 1: the attack was the only
  job, its options recorded as they were)."""
  job = dict(job)
  if job.get("schema", 1) < 2:
    job.setdefault("method", "lbfgs")
    job["schema"] = SCHEMA
  if job.get("method") == "lbfgs" and isinstance(job.get("options"), dict):
    job["options"] = options(job["options"])
  if job.get("method") == "certify" and isinstance(job.get("options"), dict):
    job["options"] = certify_options(job["options"])
  return job


def differs(recorded: dict, job: dict) -> list[str]:
  """The parts of `job` that a recorded job (any schema) differs in."""
  old = migrate(recorded)
  return [k for k in job if old.get(k) != job[k]]


def job_identity(job, pb, index, batch_size: int, key) -> dict:
  """What identifies a run of `job` (a `jobs.Job`) on the checked problem `pb`
  (`inputs.Problem`), part by part (so that a refusal can say what differs)."""
  return {"schema": SCHEMA, "method": job.method,
          "model": adapt.fingerprint(pb.model, pb.input_shape),
          "inputs": adapt.digest(pb.x), "targets": adapt.digest(pb.target),
          "labels": adapt.digest(pb.label), "index": adapt.digest(index),
          "bounds": adapt.digest(pb.lo, pb.hi), **job.identity,
          "key": None if key is None else adapt.digest(key_data(key)),
          "batch_size": batch_size, "n": pb.n}


def key_data(key) -> np.ndarray:
  """The raw bits of a PRNG key, typed (jax.random.key) or not (PRNGKey)."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.asarray(key)


def fingerprint(job: Any) -> str:
  """One digest of a job identity (written into every part it produces), or
  of any JSON-able value: the package's one digest of records."""
  return hashlib.sha1(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()
