"""Certified L2 radii per example: the lower end of each example's bracket.

`radius` takes any model kind of `advjax.adapt` (like the §4.1 attack) and a
batch; `batch` is the jitted core on already validated arrays (what a job
driver shards). Per example, a radius ε is *certified* when the lower bound
of every margin z_l − z_j (j ≠ l) over {x + r : ‖r‖₂ ≤ ε, x + r in the box} is
> 0. All examples search ε together in one jitted loop of at most `steps` trials: a
first guess from the linearised distance min_j m_j / ‖∇m_j‖, ×8 up until a
trial fails, then the worst margin bound's root inside the bracket by
safeguarded interpolation (quadratic, secant, Illinois chord; bisection in
log ε where the bound has jumps); the reported radius is the last certified
ε (the bracket's lower end), never an estimate, and 0 when the clean point
is misclassified. 'exact' and 'lipschitz' have closed forms.
With `lipschitz_floor`, the Lipschitz radius (sound for the ball, hence for
ball ∩ box) is the search's certified starting point, so the radius reported
is max(Lipschitz, the method's own), a max of two sound lower bounds.

Soundness under rounding. The bounds are computed in float64 by default
(`jax.enable_x64` only inside the call; the float32 weights and inputs are
exact in float64), so the certificate is about the real-arithmetic network
with the model's float32 weights. Every bound then subtracts tol × the sum of
the absolute values of all its terms (tol = 1e-7, against a unit roundoff of
1.1e-16), every relaxation line is moved outward by the same relative slack,
the ball ∩ box minimum is a dual value (valid at any multiplier, so its
search cannot overshoot), and the float64 radius is rounded *down* to
float32. dtype='float32' keeps the structure with tol = 1e-4.
"""

from __future__ import annotations

import contextlib
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from advjax import adapt, criteria, inputs
from advjax.certify import alpha, bounds, exact, interpret, lipschitz, rounding
from advjax.certify.options import SEARCHED, CertifyOptions, CertifyResult


class _Search(NamedTuple):
  lo: jax.Array       # largest certified ε so far
  hi: jax.Array       # smallest uncertified ε so far (inf: none yet)
  margin: jax.Array   # the worst margin bound at lo
  f_hi: jax.Array     # the worst margin bound at hi (< 0)
  prev: jax.Array     # (ε, worst margin bound) of the trial before the latest (nan: none)
  third: jax.Array    # (ε, bound) of the end the latest trial replaced (nan: none)
  stall: jax.Array    # trials in a row whose step in log ε was not half the one before
  step: jax.Array     # |log ε| step of the latest trial (inf: none yet)
  fails: jax.Array    # trials in a row that failed
  n: jax.Array        # trials that counted


def _last(s: _Search):
  """(ε, worst margin bound) of the latest trial: hi after a failure, else lo."""
  failed = s.fails > 0
  return jnp.where(failed, s.hi, s.lo), jnp.where(failed, s.f_hi, s.margin)


STALL = 3  # trials in a row that may step more than half the step before, before bisecting
# Trials stay a factor 1 + RESOLUTION from the bracket's ends: at rtol 0 the radii of
# two bounds, one above the other everywhere, are ordered up to this factor.
RESOLUTION = 1e-5
TIE = 1 - 2 * RESOLUTION  # radii of a bound above another everywhere: ≥ TIE × the other's


def _inside(s: _Search, rtol: float):
  """The next ε inside the bracket lo < hi (lo = 0: the clean point, with the
  clean margin), first of: the root of the quadratic through the bound at lo,
  hi and the end last replaced (`_quadratic_root`); after a certified trial,
  the root of the secant of the last two (the bound is close to concave in ε,
  so from the left it lands just past the root); the root of the bracket's
  chord (regula falsi, Illinois-weighted, just below it). Kept a factor
  1 + max(rtol/3, RESOLUTION) inside either end, and above hi/1024. A geometric
  step (hi/8 from lo = 0, else the geometric mean) where the values are
  unusable, and for good once STALL trials in a row did not step half as far
  (in log ε) as the one before: a bound with jumps, where only bisection
  works. Soundness does not depend on any of this: the radius is a trial."""
  lo_e, lo_f = s.lo, s.margin
  def root(e0, f0, e1, f1):
    ok = jnp.isfinite(f0) & jnp.isfinite(f1) & (f0 != f1) & jnp.isfinite(e0) & jnp.isfinite(e1)
    return jnp.where(ok, e1 - f1 * (e1 - e0) / jnp.where(ok, f1 - f0, 1.0), jnp.nan)
  pad = 1 + max(rtol / 3, RESOLUTION)  # never a trial on an end (it would stop the search)
  down, up = jnp.maximum(s.lo * pad, s.hi / 1024), s.hi / pad
  sec = root(s.prev[0], s.prev[1], *_last(s))
  # Illinois: lo kept k > 1 times in a row weighs 2^(1-k), so the chord moves off hi
  chord = root(lo_e, lo_f * 0.5 ** jnp.maximum(s.fails - 1, 0), s.hi, s.f_hi)
  use_sec = (s.fails == 0) & (sec > down) & (sec < up)  # the last trial certified
  quad = _quadratic_root(s)
  use_quad = (quad > down) & (quad < up)
  e = jnp.where(use_quad, quad, jnp.where(use_sec, sec, jnp.clip(chord, down, up)))
  usable = jnp.isfinite(e) & (lo_f > 0) & (s.f_hi < 0) & (s.stall < STALL)
  step = jnp.where(s.lo > 0, jnp.sqrt(s.lo * s.hi), s.hi / 8)
  return jnp.where(usable, e, step)


def _quadratic_root(s: _Search):
  """The root inside (lo, hi) of the quadratic through the bound at lo, hi and
  the end last replaced (nan where there is none): one root, as the quadratic
  changes sign once between lo and hi."""
  e3, f3 = s.third[0], s.third[1]
  w = s.hi - s.lo
  ok = (jnp.isfinite(e3) & jnp.isfinite(f3) & jnp.isfinite(w) & (e3 != s.lo) & (e3 != s.hi)
        & (s.margin > 0) & (s.f_hi < 0))
  safe = lambda v: jnp.where(ok & (v != 0), v, 1.0)
  d1 = (s.f_hi - s.margin) / safe(w)
  d2 = ((f3 - s.margin) / safe(e3 - s.lo) - d1) / safe(e3 - s.hi)
  beta = d1 - d2 * w  # q(lo + u) = margin + beta·u + d2·u²
  root = jnp.sqrt(jnp.maximum(beta ** 2 - 4 * d2 * s.margin, 0.0))
  u = -2 * s.margin / safe(jnp.where(beta < 0, beta - root, beta + root))
  ok = ok & (beta ** 2 >= 4 * d2 * s.margin) & (u > 0) & (u < w)
  return jnp.where(ok, s.lo + u, jnp.nan)


def search(check, eps_box, guess, steps: int, margin0, lo0=0.0, rtol: float = 0.0):
  """(last certified ε, its worst margin bound, trials) of one example.

  From `guess` (or lo0) ×8 up until a trial fails; below it, the margin
  bound's root by safeguarded interpolation (`_inside`). lo0 > 0 is an ε
  already certified (the Lipschitz floor, with margin bound margin0 there):
  the search starts from it and only looks above it. The loop stops early once
  no lane moves or every bracket is within 1 + rtol. The radius is the last
  certified ε, whatever the order of the trials."""
  def trial(s):
    grow = jnp.where(s.lo > 0, 8 * s.lo, guess)
    return jnp.minimum(jnp.where(jnp.isinf(s.hi), grow, _inside(s, rtol)), eps_box)

  def finished(s):
    e = trial(s)
    close = (s.lo > 0) & (s.hi <= s.lo * (1 + rtol))
    return (s.lo >= eps_box) | ~(e > s.lo) | ~(e < s.hi) | close

  def body(c):
    k, s = c
    e, done = trial(s), finished(s)
    ok, w = check(e)
    ok, fail = ok & ~done, ~ok & ~done
    lo, hi = jnp.where(ok, e, s.lo), jnp.where(fail, e, s.hi)
    step = jnp.abs(jnp.log(e) - jnp.log(_last(s)[0]))  # inf after the clean point
    cut = ~jnp.isfinite(s.hi) | ~jnp.isfinite(s.step) | (step <= s.step / 2)
    moved = ok | fail
    return k + 1, _Search(
        lo, hi, jnp.where(ok, w, s.margin), jnp.where(fail, w, s.f_hi),
        jnp.where(moved, jnp.stack(_last(s)), s.prev),
        jnp.where(ok, jnp.stack([s.lo, s.margin]),
                  jnp.where(fail & jnp.isfinite(s.hi), jnp.stack([s.hi, s.f_hi]), s.third)),
        jnp.where(moved, jnp.where(cut & (s.stall < STALL), 0, s.stall + 1), s.stall),
        jnp.where(moved, step, s.step),
        jnp.where(ok, 0, s.fails + fail.astype(jnp.int32)),
        s.n + (~done).astype(jnp.int32))

  lo0 = jnp.minimum(jnp.asarray(lo0, eps_box.dtype), eps_box)
  margin0 = jnp.asarray(margin0, eps_box.dtype)
  nan = jnp.full((2,), jnp.nan, eps_box.dtype)
  s0 = _Search(lo0, jnp.full_like(eps_box, jnp.inf), margin0, jnp.full_like(eps_box, -jnp.inf),
               nan, nan, jnp.zeros((), jnp.int32),
               jnp.full_like(eps_box, jnp.inf), *[jnp.zeros((), jnp.int32)] * 2)
  _, s = jax.lax.while_loop(lambda c: (c[0] < steps) & ~finished(c[1]), body,
                            (jnp.zeros((), jnp.int32), s0))
  return s.lo, s.margin, s.n


def _guess(g, env, x0, C, m, eps_box):
  """min_j m_j / ‖∇(z_l − z_j)‖: the linearised distance (a search start)."""
  f = lambda x: interpret.read(interpret.evaluate(g, env, x, x0.dtype), g.out)
  J = jax.jacrev(f)(x0).reshape(C.shape[0], -1)
  n = jnp.sqrt(jnp.sum((C @ J) ** 2, -1))
  d = jnp.min(jnp.where((m > 0) & (n > 0), m / jnp.where(n > 0, n, 1.0), jnp.inf))
  fallback = jnp.where(jnp.isfinite(eps_box), eps_box, 1.0)
  return jnp.where(jnp.isfinite(d) & (d > 0), d, fallback)


def _check(c: bounds.Ctx, eps):
  """(certified at ε, worst margin bound at ε)."""
  if c.opts.method == "alpha-crown":
    low = alpha.margins(c, eps)
  else:
    low = bounds.margins(c, eps)
  return jnp.all(low > 0), jnp.min(low)


def _one(g, plan, env, rn, lu, opts, lip, x0, label, lo, hi):
  """(radius, margin bound, evaluations) of one example (vmapped)."""
  clean = interpret.evaluate(g, env, x0, x0.dtype)
  z = jnp.asarray(interpret.read(clean, g.out), x0.dtype)
  K = z.shape[0]
  C = jax.nn.one_hot(label, K, dtype=x0.dtype)[None, :] - jnp.eye(K, dtype=x0.dtype)
  is_l = jnp.arange(K) == label
  m = C @ z - opts.slack * (jnp.abs(C) @ jnp.abs(z))  # clean margins, rounded down
  m = jnp.where(is_l, jnp.inf, m)
  worst = jnp.min(m)
  if opts.box:
    A, B = lo - x0, hi - x0
    eps_box = jnp.sqrt(jnp.sum(jnp.maximum(-A, B) ** 2))
  else:  # the ball alone
    A, B = jnp.full_like(x0, -jnp.inf), jnp.full_like(x0, jnp.inf)
    eps_box = jnp.asarray(jnp.inf, x0.dtype)
  if opts.method == "lipschitz":
    r, margin = lipschitz.radius(lip, m, label, eps_box, opts.slack)
    return jnp.where(worst > 0, r, 0.0), jnp.where(worst > 0, margin, worst), jnp.int32(0)
  c = bounds.Ctx(g, plan, env, clean, rn, x0, A, B, C, opts, lu)
  if opts.method == "exact":
    r, margin, n = exact.radius(c, eps_box)
  else:
    lo0, margin0 = 0.0, worst
    if lip is not None and opts.lipschitz_floor:  # certifies the ball, so ball ∩ box
      lo0, margin0 = lipschitz.radius(lip, m, label, eps_box, opts.slack)
    lo0 = jnp.where(worst > 0, lo0, 0.0)
    margin0 = jnp.where(lo0 > 0, margin0, worst)
    r, margin, n = search(functools.partial(_check, c), eps_box,
                          _guess(g, env, x0, C, m, eps_box), opts.steps, margin0,
                          lo0, opts.rtol)
  return jnp.where(worst > 0, r, 0.0), jnp.where(worst > 0, margin, worst), n


def _floor32(v):
  """float32 of v, rounded toward −∞ (a radius is never rounded up)."""
  y = v.astype(jnp.float32)
  return jnp.where(y.astype(v.dtype) > v, jnp.nextafter(y, jnp.float32(-jnp.inf)), y)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _core(apply, opts: CertifyOptions, params, x, label, lo, hi, lip):
  dtype = opts.jnp_dtype
  g = interpret.trace(apply, params, x.shape[1:])
  plan = bounds.make_plan(g, opts)
  env = interpret.constants(g, jax.tree_util.tree_leaves(params), dtype)
  rn = bounds.rownorms(g, plan, env, dtype)
  lu = None
  if lip is not None and opts.lipschitz_units and opts.method != "lipschitz":
    lu = lipschitz.unit_bounds(g, plan, env, params, lip.norms, dtype)
  lo, hi = (jnp.broadcast_to(v, x.shape).astype(dtype) for v in (lo, hi))
  one = functools.partial(_one, g, plan, env, rn, lu, opts, lip)
  args = (x.astype(dtype), label, lo, hi)
  if opts.chunk and opts.chunk < x.shape[0]:  # chunks in sequence, vmapped inside
    r, margin, n = jax.lax.map(lambda a: one(*a), args, batch_size=opts.chunk)
  else:
    r, margin, n = jax.vmap(one)(*args)
  return (_floor32(r), _floor32(criteria.per_pixel(r, x.shape[1:])), _floor32(margin),
          label, n)


def batch(apply, params, x, label, lo, hi, options: CertifyOptions = CertifyOptions(),
          lip: lipschitz.Constants | None = None) -> CertifyResult:
  """Certified radii of a validated batch: the jitted, vmapped core.

  Args:
    apply: per-example apply(params, x) -> (K,) logits (hashable, static).
    params: its arrays (jit arguments).
    x: (B, ...) inputs inside the box; label: (B,) int32.
    lo, hi: the box, shaped (B, ...) per example or like one input.
    options: `CertifyOptions` (static); options.method chooses the method.
    lip: `lipschitz.constants(apply, params)` for method 'lipschitz'; with
      options.lipschitz_floor it is computed here when None (advjax Models).

  Raises:
    UnsupportedPrimitiveError: a primitive on the path from x has no rule.
    ValueError: 'exact' on a non-affine model; 'lipschitz' without `lip`.
  """
  opts = options.check().resolved()
  g = interpret.trace(apply, params, np.shape(x)[1:])
  plan = bounds.make_plan(g, opts)  # refuses unsupported primitives here
  if opts.method == "exact":
    exact.check_affine(g, plan)
  if opts.method == "lipschitz" and lip is None:
    raise ValueError("method='lipschitz' needs lip=certify.lipschitz.constants(apply, params).")
  use_lip = (opts.lipschitz_floor or opts.lipschitz_units) and opts.method in SEARCHED
  where = rounding.first(g, plan)
  if (use_lip or opts.method == "lipschitz") and where is not None:
    raise ValueError(
        f"the Lipschitz bounds assume the real network, but the model rounds to {where}; "
        "use method 'crown' without lipschitz_floor/lipschitz_units (it bounds each rounding).")
  if use_lip and lip is None:
    lip = _constants_or_none(apply, params)
  if not use_lip and opts.method != "lipschitz":
    lip = None
  x64 = jax.enable_x64(True) if opts.dtype == "float64" else contextlib.nullcontext()
  with x64:
    out = _core(apply, opts, params, x, label, lo, hi, lip)
  left = plan.intervals and opts.method in ("crown", "alpha-crown")  # looser: say so
  return CertifyResult(*out, opts.method + ("+intervals" if left else "")
                       + ("+lipschitz" if use_lip and lip is not None else ""))


_LAST: list = []  # [(apply, digest of the params' values, constants)]: one entry


def _constants_or_none(apply, params):
  """The Lipschitz constants of an advjax Model, or None for other models.

  The last ones are reused for the same apply and parameters of the same
  *values* (a digest of their bytes): parameters changed in place, or new
  arrays of the same shapes, get their own constants (an identity key kept
  the old ones after an in-place change: unsound radii).
  """
  key = adapt.digest(*jax.tree_util.tree_leaves(params))
  if _LAST and _LAST[0][0] is apply and _LAST[0][1] == key:
    return _LAST[0][2]
  try:
    lip = lipschitz.constants(apply, params)
  except ValueError:
    lip = None
  _LAST[:] = [(apply, key, lip)]
  return lip


def radius(model, x, label=None, *, bounds=inputs.BOX, method: str = "crown",
           options: CertifyOptions = CertifyOptions()) -> CertifyResult:
  """Certified L2 radii of a batch (the lower end of each example's bracket).

  Args:
    model: any model kind of `advjax.adapt` (function, (apply_fn, params)
      pair, Flax NNX or Equinox module), validated by `advjax.inputs.problem`
      (the attack's checks); 'lipschitz' needs an
      `advjax.models.Model` as (model.apply, params).
    x: (B, ...) inputs inside the box.
    label: (B,) labels to certify; default the model's prediction.
    bounds: (lo, hi) like one input, or (B, ...) per example.
    method: 'lipschitz', 'ibp', 'crown', 'alpha-crown' or 'exact'.
    options: `CertifyOptions`; its method is replaced by `method`.

  Returns:
    CertifyResult: l2, distortion (= l2/√m, §4.1's unit), margin, label,
    evaluations, method.
  """
  opts = options._replace(method=method).check()
  pb = inputs.problem(model, x, bounds, label=label)
  apply, params = pb.model.apply, pb.model.params  # as written (no gradient rewrites)
  lip = lipschitz.constants(apply, params) if method == "lipschitz" else None
  if pb.n == 0:
    z = np.zeros(0, np.float32)
    return CertifyResult(z, z, z, np.zeros(0, np.int32), np.zeros(0, np.int32), method)
  lo, hi = (jnp.broadcast_to(jnp.asarray(v), pb.x.shape) for v in (pb.lo, pb.hi))
  return batch(apply, params, jnp.asarray(pb.x), inputs.default_labels(pb), lo, hi,
               opts, lip)
