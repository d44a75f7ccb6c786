"""The box-constrained L-BFGS attack of Szegedy et al. §4.1, batched.

The paper's problem is D(x, l) = argmin ‖r‖₂ s.t. f(x+r) = l, x+r ∈ [0,1]^m,
approximated by minimising c·|r| + loss_f(x+r, l) over the box and searching c.

Formulation used here (documented in BUILD_NOTES.md §2):

    minimise over z = x + r ∈ [0,1]^m:   c·‖z − x‖₂² + CE(logits(z), l)

* c sits on the norm term, as in the paper, so the minimum distortion comes
  from the LARGEST c whose minimiser still reaches l. Dividing by c shows this
  is cleverhans' ‖r‖² + (1/c)·CE: the same family of minimisers.
* The squared norm (as cleverhans/foolbox) keeps the objective smooth at r = 0,
  where every attack starts; ‖r‖ is not differentiable there and L-BFGS's
  curvature model breaks on a kink. For each c both penalties trace minimisers
  on the (‖r‖, CE) trade-off curve, so the c search lands on the same points.
* The c search is per example but all examples advance together: a geometric
  bracket (c·factor after a success, c/factor after a failure) until a success
  and a failure are known, then `bisect_steps` bisections in log c. The best
  (smallest ‖r‖) successful point seen at any c is kept; each solve is
  warm-started from it (or from the last solution before any success).
* A point counts as reaching l during the search only if logit l leads every
  other logit by MARGIN = 1e-3, so that float differences between evaluations
  cannot flip the final re-check; `success` itself is the plain argmax on the
  returned x_adv.

The solver is a batched projected L-BFGS (`advjax._lbfgsb.pqn`, default) or
`jaxopt.LBFGSB` (`solver='jaxopt'`), vmapped over the batch and jit-compiled
once per (logits_fn, shape, options). Pass the same `logits_fn` object to reuse
the compiled attack.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from advjax import _lbfgsb
from advjax._lbfgsb import SolveOptions

LogitsFn = Callable[[jax.Array], jax.Array]


class AttackResult(NamedTuple):
  """Per-example results; every field has leading dimension B.

  Attributes:
    x_adv: adversarial inputs, always inside [0,1].
    r: x_adv − x.
    success: argmax logits_fn(x_adv) == target, re-checked on x_adv.
    target: the label attacked.
    c: the norm weight of the returned point (inf: x was already the target;
      0: no success was found).
    l2: ‖r‖₂.
    distortion: the paper's per-pixel RMS, sqrt(mean(r²)) (Tables 1–4).
    iterations: inner L-BFGS iterations, summed over all solves.
    solves: number of L-BFGS solves (c values tried).
  """
  x_adv: jax.Array
  r: jax.Array
  success: jax.Array
  target: jax.Array
  c: jax.Array
  l2: jax.Array
  distortion: jax.Array
  iterations: jax.Array
  solves: jax.Array


class AttackOptions(NamedTuple):
  """The c search and solver choice (hashable: static under jit)."""
  solver: str = "pqn"
  c_init: float = 1.0
  c_factor: float = 10.0
  bisect_steps: int = 10
  max_bracket: int = 8
  warm_start: bool = True
  solve: SolveOptions = SolveOptions()


def _ce(logits: jax.Array, l: jax.Array) -> jax.Array:
  """Cross-entropy of the softmax for one example: loss_f(x, l) in §4.1."""
  return jax.nn.logsumexp(logits) - logits[l]


# The search accepts a point only if the target's logit leads by this much, so
# that float differences between evaluations (batched vs single, fused vs not)
# cannot flip the final re-check of a point that sits on the decision boundary.
MARGIN = 1e-3


def _reaches(logits: jax.Array, l: jax.Array) -> jax.Array:
  """Per row: logits[l] exceeds every other logit by MARGIN."""
  other = jnp.where(jax.nn.one_hot(l, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return jnp.take_along_axis(logits, l[..., None], -1)[..., 0] > other.max(-1) + MARGIN


def penalty(logits_fn: LogitsFn, shape: tuple[int, ...]):
  """The §4.1 objective on flat z: c·‖z − x‖² + CE(logits(z), l)."""
  def fun(z, x, l, c):
    logits = logits_fn(z.reshape((1,) + shape))[0]
    return c * jnp.sum((z - x) ** 2) + _ce(logits, l)
  return fun


class _Search(NamedTuple):
  c: jax.Array
  c_ok: jax.Array
  c_fail: jax.Array
  best_z: jax.Array
  best_l2: jax.Array
  best_c: jax.Array
  last_z: jax.Array
  n_bracket: jax.Array
  n_bisect: jax.Array
  iters: jax.Array
  solves: jax.Array
  finished: jax.Array


def _next_c(s: _Search, ok, opts: AttackOptions):
  """Bounds and next c per lane after solves at s.c that did (ok) or did not succeed."""
  c_ok = jnp.where(ok, jnp.maximum(s.c_ok, s.c), s.c_ok)
  c_fail = jnp.where(ok, s.c_fail, jnp.minimum(s.c_fail, s.c))
  both = (c_ok > 0) & jnp.isfinite(c_fail)
  c = jnp.where(both, jnp.sqrt(c_ok * jnp.where(both, c_fail, 1.)),
                jnp.where(ok, s.c * opts.c_factor, s.c / opts.c_factor))
  return c, c_ok, c_fail, both


def _solver(fun, opts: AttackOptions):
  """solve(z0, done, x, l, c) -> (z, iters) on a batch, for the chosen solver."""
  if opts.solver == "pqn":
    vg = jax.vmap(jax.value_and_grad(fun))
    def solve(z0, done, x, l, c):
      res = _lbfgsb.pqn(lambda z: vg(z, x, l, c), z0, done, 0., 1., opts.solve)
      return res.z, res.iters
    return solve
  one = lambda z0, d, x, l, c: _lbfgsb.jaxopt_lbfgsb(fun, z0, d, (x, l, c), 0., 1.,
                                                      opts.solve)
  def solve(z0, done, x, l, c):
    res = jax.vmap(one)(z0, done, x, l, c)
    return res.z, res.iters
  return solve


def _search(logits_fn, shape, opts: AttackOptions, x, l, done):
  """The c search for flat lanes x (B, n): all lanes advance together."""
  solve = _solver(penalty(logits_fn, shape), opts)
  B = x.shape[0]
  full = lambda v, dt=jnp.float32: jnp.full((B,), v, dt)
  s = _Search(full(opts.c_init), full(0.), full(jnp.inf), x,
              jnp.where(done, 0., jnp.inf), jnp.where(done, jnp.inf, 0.), x,
              full(0, jnp.int32), full(0, jnp.int32), full(0, jnp.int32),
              full(0, jnp.int32), done)

  def body(s: _Search) -> _Search:
    was = (s.c_ok > 0) & jnp.isfinite(s.c_fail)
    have = jnp.isfinite(s.best_l2)[:, None]
    z0 = jnp.where(have, s.best_z, s.last_z) if opts.warm_start else x
    z, iters = solve(z0, s.finished, x, l, s.c)
    z = jnp.clip(z, 0., 1.)
    ok = _reaches(logits_fn(z.reshape((B,) + shape)), l)
    l2 = jnp.linalg.norm(z - x, axis=-1)
    better = ok & (l2 < s.best_l2)
    c, c_ok, c_fail, both = _next_c(s, ok, opts)
    n_bracket = s.n_bracket + (~was).astype(jnp.int32)
    n_bisect = s.n_bisect + was.astype(jnp.int32)
    fin = (both & (n_bisect >= opts.bisect_steps)) | (~both & (n_bracket >= opts.max_bracket))
    new = _Search(c, c_ok, c_fail, jnp.where(better[:, None], z, s.best_z),
                  jnp.where(better, l2, s.best_l2), jnp.where(better, s.c, s.best_c),
                  z, n_bracket, n_bisect, s.iters + iters, s.solves + 1, fin)
    keep = lambda a, b: jnp.where(
        s.finished.reshape((-1,) + (1,) * (a.ndim - 1)), b, a)
    return jax.tree_util.tree_map(keep, new, s)

  s = jax.lax.while_loop(lambda s: jnp.any(~s.finished), body, s)
  # Never successful: return the last solve, which was at the smallest c.
  z = jnp.where(jnp.isfinite(s.best_l2)[:, None], s.best_z, s.last_z)
  return z, s.best_c, s.iters, s.solves


def _attack(logits_fn: LogitsFn, x: jax.Array, target: jax.Array,
            opts: AttackOptions) -> AttackResult:
  """Batched attack (jitted below); inputs are already validated."""
  B, shape = x.shape[0], x.shape[1:]
  xf = x.reshape(B, -1)
  done = jnp.argmax(logits_fn(x), -1) == target
  z, c, iters, solves = _search(logits_fn, shape, opts, xf, target, done)
  x_adv = jnp.clip(z.reshape(x.shape), 0., 1.)
  r = x_adv - x
  success = jnp.argmax(logits_fn(x_adv), -1) == target
  l2 = jnp.sqrt(jnp.sum(r.reshape(B, -1) ** 2, -1))
  return AttackResult(x_adv, r, success, target, c, l2,
                      l2 / math.sqrt(xf.shape[1]), iters, solves)


_attack_jit = jax.jit(_attack, static_argnums=(0, 3))


def _num_classes(logits_fn: LogitsFn, x) -> int:
  """K from the logits' shape; raises unless logits_fn maps (B, ...) to (B, K)."""
  try:
    out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, jnp.float32))
  except Exception as e:
    raise ValueError(f"logits_fn failed on inputs of shape {tuple(x.shape)} ({e}); "
                     "it must map a batch (B, ...) to logits (B, K).") from e
  if not hasattr(out, "shape") or len(out.shape) != 2 or out.shape[0] != x.shape[0]:
    raise ValueError(f"logits_fn maps inputs {tuple(x.shape)} to "
                     f"{getattr(out, 'shape', type(out))}; it must return logits "
                     f"of shape (B, K) = ({x.shape[0]}, K).")
  return int(out.shape[1])


def check_inputs(logits_fn: LogitsFn, x, target=None) -> int:
  """Validates x (B, ...) in [0,1] and target (B,) in [0, K); returns K."""
  if np.ndim(x) < 2:
    raise ValueError(f"x has shape {np.shape(x)}; it must be a batch (B, ...) "
                     "with a leading batch dimension.")
  xs = jnp.asarray(x)
  lo, hi, finite = (float(v) for v in jax.device_get(
      (jnp.min(xs), jnp.max(xs), jnp.all(jnp.isfinite(xs)))))
  if not finite:
    raise ValueError("x contains NaN or inf; inputs must be finite pixels in [0,1].")
  if lo < 0 or hi > 1:
    raise ValueError(f"x has values in [{lo:g}, {hi:g}]; the attack's box is "
                     "[0,1]: rescale inputs to [0,1] first.")
  K = _num_classes(logits_fn, xs)
  if target is not None:
    _check_labels(target, xs.shape[0], K, "target")
  return K


def _check_labels(t, B: int, K: int, name: str) -> None:
  """Raises unless `t` is (B,) integer labels in [0, K)."""
  t = np.asarray(t)
  if t.shape != (B,):
    raise ValueError(f"{name} has shape {t.shape} but x has batch size "
                     f"{B}; {name} must be (B,) = ({B},).")
  if not np.issubdtype(t.dtype, np.integer):
    raise ValueError(f"{name} has dtype {t.dtype}; labels must be integers.")
  if t.size and (t.min() < 0 or t.max() >= K):
    raise ValueError(f"{name} has labels in [{t.min()}, {t.max()}] but the "
                     f"model has K = {K} classes: labels must be in [0, {K}).")


def random_targets(key: jax.Array, labels, num_classes: int) -> jax.Array:
  """A uniformly random label ≠ labels[i] per example (the paper's protocol)."""
  labels = jnp.asarray(labels, jnp.int32)
  off = jax.random.randint(key, labels.shape, 1, num_classes)
  return (labels + off) % num_classes


def _best_of(a: AttackResult, b: AttackResult) -> AttackResult:
  """Per example, the successful result with the smaller ‖r‖ (a on ties)."""
  la = jnp.where(a.success, a.l2, jnp.inf)
  lb = jnp.where(b.success, b.l2, jnp.inf)
  take_b = (lb < la) | (~a.success & ~b.success & (b.l2 < a.l2))
  pick = lambda u, v: jnp.where(take_b.reshape((-1,) + (1,) * (u.ndim - 1)), v, u)
  out = jax.tree_util.tree_map(pick, a, b)
  return out._replace(iterations=a.iterations + b.iterations,
                      solves=a.solves + b.solves)


def lbfgs(logits_fn: LogitsFn, x, target=None, *, label=None,
          untargeted: str = "all", key: jax.Array | None = None,
          solver: str = "pqn", c_init: float = 1.0, c_factor: float = 10.0,
          bisect_steps: int = 10, max_bracket: int = 8, warm_start: bool = True,
          maxiter: int = 10, history: int = 5, gtol: float = 1e-5,
          ftol: float = 1e-6, maxls: int = 20,
          linesearch: str = "backtracking") -> AttackResult:
  """The box-constrained L-BFGS attack (Szegedy et al. §4.1) on a batch.

  For each example minimises c·‖r‖₂² + CE(logits(x+r), l) over x+r ∈ [0,1]^m
  with box-constrained L-BFGS, searching c per example (geometric bracket,
  then bisection in log c; all examples advance together) and keeping the
  smallest successful r. Examples already classified as their target return
  r = 0 without a solve. Compiled once per (logits_fn, shape, options).

  Args:
    logits_fn: maps inputs (B, ...) to logits (B, K); reuse one object so the
      compiled attack is reused.
    x: inputs (B, ...) in [0,1].
    target: (B,) int labels in [0, K), or None for an untargeted attack.
    label: (B,) labels the untargeted attack moves away from; default the
      model's prediction on x.
    untargeted: with target=None: 'all' (closest adversarial example over all
      K−1 other labels: K−1 attacks), 'logits' (the runner-up logit as target),
      or 'random' (a random wrong label from `key`, the paper's protocol).
    key: PRNG key for untargeted='random'.
    solver: 'pqn' (batched projected L-BFGS, default) or 'jaxopt' (jaxopt.LBFGSB).
    c_init, c_factor, bisect_steps, max_bracket: the c search: start, bracket
      factor, bisections after bracketing, most bracket steps.
    warm_start: start each solve from the best point so far rather than x.
    maxiter, history, gtol, ftol, maxls, linesearch: inner solver settings
      (`advjax._lbfgsb.SolveOptions`; `linesearch` only affects jaxopt).
      maxiter caps each solve: warm starts carry progress across the c search,
      so 10 loses ≤ 0.4% distortion against 100 and runs 2–7× faster
      (BUILD_NOTES.md §2).

  Returns:
    AttackResult: x_adv (always in the box), r, success (re-checked by the
    model on x_adv), target, c, l2, distortion (RMS per pixel), iterations, solves.

  Raises:
    ValueError: x outside [0,1] or not finite, target not (B,) or outside
      [0, K), logits_fn output not (B, K), or unknown options.
  """
  K = check_inputs(logits_fn, x, target)
  opts = _options(solver, c_init, c_factor, bisect_steps, max_bracket, warm_start,
                  maxiter, history, gtol, ftol, maxls, linesearch)
  x = jnp.asarray(x, jnp.float32)
  if target is not None:
    return _attack_jit(logits_fn, x, jnp.asarray(target, jnp.int32), opts)
  logits = logits_fn(x)
  if label is not None:  # x was checked above; only the labels are new
    _check_labels(label, x.shape[0], K, "label")
  label = jnp.argmax(logits, -1) if label is None else jnp.asarray(label, jnp.int32)
  if untargeted == "random":
    if key is None:
      raise ValueError("untargeted='random' needs a PRNG key: pass key=jax.random.PRNGKey(0).")
    return _attack_jit(logits_fn, x, random_targets(key, label, K), opts)
  if untargeted == "logits":
    masked = jnp.where(jax.nn.one_hot(label, K, dtype=bool), -jnp.inf, logits)
    return _attack_jit(logits_fn, x, jnp.argmax(masked, -1).astype(jnp.int32), opts)
  if untargeted != "all":
    raise ValueError(f"untargeted={untargeted!r}; choose 'all', 'logits' or 'random'.")
  best = None
  for k in range(1, K):
    res = _attack_jit(logits_fn, x, ((label + k) % K).astype(jnp.int32), opts)
    best = res if best is None else _best_of(best, res)
  return best


def _options(solver="pqn", c_init=1.0, c_factor=10.0, bisect_steps=10,
             max_bracket=8, warm_start=True, maxiter=10, history=5, gtol=1e-5,
             ftol=1e-6, maxls=20, linesearch="backtracking") -> AttackOptions:
  """Validated, hashable attack options (the defaults are `lbfgs`'s)."""
  if solver not in _lbfgsb.SOLVERS:
    raise ValueError(f"solver={solver!r}; choose one of {sorted(_lbfgsb.SOLVERS)}.")
  if c_init <= 0 or c_factor <= 1 or bisect_steps < 0 or max_bracket < 1:
    raise ValueError("need c_init > 0, c_factor > 1, bisect_steps >= 0, max_bracket >= 1.")
  return AttackOptions(solver, float(c_init), float(c_factor), int(bisect_steps),
                       int(max_bracket), bool(warm_start),
                       SolveOptions(int(maxiter), int(history), float(gtol),
                                    float(ftol), int(maxls), linesearch))


@functools.partial(jax.jit, static_argnums=(0, 4))
def _attack_params(apply_fn, params, x, target, opts: AttackOptions) -> AttackResult:
  """The batched attack with the model's parameters as a traced argument."""
  return _attack(lambda z: apply_fn(params, z), x, target, opts)


def lbfgs_params(apply_fn: Callable, params, x, target, **options) -> AttackResult:
  """`lbfgs` (targeted) on logits `apply_fn(params, x)`, params traced (§4.1).

  New parameter values reuse the compiled attack, which `lbfgs` with a fresh
  closure would not: adversarial training (§4.2) attacks the network being
  trained every epoch. Pass the same `apply_fn` object each call.

  Args:
    apply_fn: (params, inputs (B, ...)) -> logits (B, K).
    params: any pytree of arrays.
    x: inputs (B, ...) in [0,1].
    target: (B,) int labels in [0, K).
    **options: the c-search and solver options of `lbfgs`.

  Returns:
    AttackResult, as `lbfgs`.
  """
  check_inputs(lambda z: apply_fn(params, z), x, target)
  return _attack_params(apply_fn, params, jnp.asarray(x, jnp.float32),
                        jnp.asarray(target, jnp.int32), _options(**options))


def lbfgs_reference(logits_fn: LogitsFn, x, target, *, c_init: float = 1.0,
                    c_factor: float = 10.0, bisect_steps: int = 20,
                    max_bracket: int = 8, maxiter: int = 1000, history: int = 10
                    ) -> AttackResult:
  """Slow, obviously right reference: scipy L-BFGS-B per example (§4.1).

  The same objective as `lbfgs` (c·‖r‖₂² + CE over the box), one
  `scipy.optimize.minimize(method='L-BFGS-B')` per c, each started from r = 0,
  with the same bracket and a finer bisection; keeps the smallest successful r.
  Used by tests and experiments/bench_attack.py to judge `lbfgs`'s accuracy.
  """
  from scipy import optimize
  check_inputs(logits_fn, x, target)
  x = np.asarray(x, np.float32)
  B, shape = x.shape[0], x.shape[1:]
  fun = penalty(logits_fn, shape)
  vg = jax.jit(jax.value_and_grad(fun))
  reach = jax.jit(lambda z, l: _reaches(logits_fn(z.reshape((1,) + shape)), l[None])[0])
  out = {k: [] for k in ("z", "c", "it", "n")}
  for i in range(B):
    xi, li = x[i].reshape(-1), int(target[i])
    def f(z, c):
      v, g = vg(z.astype(np.float32), xi, li, np.float32(c))
      return float(v), np.asarray(g, np.float64)
    best, best_l2, best_c, it, n = xi, np.inf, np.inf, 0, 0
    if int(jnp.argmax(logits_fn(x[i:i + 1]), -1)[0]) == li:
      best_l2 = 0.
    c, c_ok, c_fail, nbr, nbi = c_init, 0., np.inf, 0, 0
    last = xi
    while best_l2 > 0 and (
        (c_ok > 0 and np.isfinite(c_fail) and nbi < bisect_steps) or
        (not (c_ok > 0 and np.isfinite(c_fail)) and nbr < max_bracket)):
      bracketed = c_ok > 0 and np.isfinite(c_fail)
      res = optimize.minimize(f, xi.astype(np.float64), args=(c,), jac=True,
                              method="L-BFGS-B", bounds=[(0., 1.)] * xi.size,
                              options=dict(maxiter=maxiter, maxcor=history))
      z = np.clip(res.x, 0., 1.).astype(np.float32)
      it, n = it + res.nit, n + 1
      ok = bool(reach(z, np.int32(li)))
      l2 = float(np.linalg.norm(z - xi))
      if ok and l2 < best_l2:
        best, best_l2, best_c = z, l2, c
      last = z
      c_ok, c_fail = (max(c_ok, c), c_fail) if ok else (c_ok, min(c_fail, c))
      nbi, nbr = nbi + bracketed, nbr + (not bracketed)
      both = c_ok > 0 and np.isfinite(c_fail)
      c = math.sqrt(c_ok * c_fail) if both else (c * c_factor if ok else c / c_factor)
    out["z"].append(best if np.isfinite(best_l2) else last)
    out["c"].append(best_c); out["it"].append(it); out["n"].append(n)
  x_adv = np.clip(np.stack(out["z"]).reshape(x.shape), 0., 1.)
  r = x_adv - x
  l2 = np.sqrt((r.reshape(B, -1) ** 2).sum(-1))
  success = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x_adv)), -1)) == np.asarray(target)
  return AttackResult(x_adv, r, success, np.asarray(target), np.asarray(out["c"], np.float32),
                      l2, l2 / math.sqrt(r[0].size), np.asarray(out["it"]), np.asarray(out["n"]))
