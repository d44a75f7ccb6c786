"""The slow, obviously right oracle of the §4.1 attack: scipy's L-BFGS-B per example.

Same objective as `advjax.attacks.lbfgs` (c·‖r‖₂² + CE over the box), one
`scipy.optimize.minimize(method='L-BFGS-B')` per c and example, each started
from r = 0 (no warm start), with the same bracket, a finer bisection and the
same MARGIN; keeps the smallest successful r. Tests and
`experiments/bench_attack.py` use it as the judge of the batched attack.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from advjax import adapt
from advjax.attacks import AttackResult, penalty
from advjax.boundary import reaches
from advjax.checks import check_labels, prepare


def _search_one(f, reach, xi, li, lo, hi, c_init, c_factor, bisect_steps,
                max_bracket, maxiter, history):
  """The c search of one example; returns (z, c, iterations, solves)."""
  best, best_l2, best_c, it, n, last = xi, np.inf, 0.0, 0, 0, xi  # c 0: no success
  c, c_ok, c_fail, nbr, nbi = c_init, 0., np.inf, 0, 0
  box = list(zip(lo.astype(np.float64), hi.astype(np.float64)))
  while ((c_ok > 0 and np.isfinite(c_fail) and nbi < bisect_steps) or
         (not (c_ok > 0 and np.isfinite(c_fail)) and nbr < max_bracket)):
    bracketed = c_ok > 0 and np.isfinite(c_fail)
    res = optimize.minimize(f, xi.astype(np.float64), args=(c,), jac=True,
                            method="L-BFGS-B", bounds=box,
                            options=dict(maxiter=maxiter, maxcor=history))
    z = np.clip(res.x, lo, hi).astype(np.float32)
    it, n, last = it + res.nit, n + 1, z
    ok = bool(reach(z))
    l2 = float(np.linalg.norm(z - xi))
    if ok and l2 < best_l2:
      best, best_l2, best_c = z, l2, c
    c_ok, c_fail = (max(c_ok, c), c_fail) if ok else (c_ok, min(c_fail, c))
    nbi, nbr = nbi + bracketed, nbr + (not bracketed)
    both = c_ok > 0 and np.isfinite(c_fail)
    c = math.sqrt(c_ok * c_fail) if both else (c * c_factor if ok else c / c_factor)
  return (best if np.isfinite(best_l2) else last), best_c, it, n


def lbfgs_reference(model: Any, x, target, *, bounds=(0.0, 1.0),
                    c_init: float = 1.0, c_factor: float = 10.0,
                    bisect_steps: int = 20, max_bracket: int = 8,
                    maxiter: int = 1000, history: int = 10) -> AttackResult:
  """scipy L-BFGS-B per example and per c: the oracle for `attacks.lbfgs` (§4.1).

  Args:
    model, x, target, bounds: as `attacks.lbfgs` (targeted only).
    c_init, c_factor, bisect_steps, max_bracket: the c search (finer than the
      batched attack's default).
    maxiter, history: scipy's per-solve iteration cap and memory.
  """
  from advjax.attacks import AttackOptions  # pylint: disable=import-outside-toplevel
  p = prepare(model, x, bounds, AttackOptions())
  x = np.asarray(x, np.float32)
  B, shape = x.shape[0], x.shape[1:]
  target = np.asarray(check_labels(target, B, p.num_classes, "target"))
  vg = jax.jit(jax.value_and_grad(penalty(p.apply, shape)))
  reach = jax.jit(lambda z, l: reaches(p.apply(p.params, z.reshape(shape))[None], l[None])[0])
  lo, hi = p.lo.reshape(-1), p.hi.reshape(-1)
  pred = np.asarray(jnp.argmax(adapt.logits(p.apply, p.params, jnp.asarray(x)), -1))
  out = []
  for i in range(B):
    xi, li = x[i].reshape(-1), np.int32(target[i])
    if pred[i] == li:  # already the target: r = 0, no solve
      out.append((xi, np.inf, 0, 0))
      continue
    def f(z, c, xi=xi, li=li):
      v, g = vg(z.astype(np.float32), p.params, xi, li, np.float32(c))
      return float(v), np.asarray(g, np.float64)
    out.append(_search_one(f, lambda z, li=li: reach(z, li), xi, li, lo, hi,
                           c_init, c_factor, bisect_steps, max_bracket, maxiter, history))
  z, c, it, n = (np.stack(v) for v in zip(*out))
  x_adv = np.clip(z.reshape(x.shape), p.lo, p.hi)
  r = x_adv - x
  l2 = np.sqrt((r.reshape(B, -1) ** 2).sum(-1))
  logits = np.asarray(adapt.logits(p.apply, p.params, jnp.asarray(x_adv)))
  success = (logits.argmax(-1) == target) & np.isfinite(logits).all(-1)
  return AttackResult(x_adv, r, success, target, c.astype(np.float32), l2,
                      l2 / math.sqrt(r[0].size), it, n)
