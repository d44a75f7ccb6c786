"""Bounds of the logits' margins at one radius ε: IBP and CROWN on the graph.

The forward pass walks the graph once in order and gives every x-dependent
variable an interval: x's is the box ∩ [x₀ − ε, x₀ + ε] (a coordinate of an
L2 ball moves at most ε); affine nodes use mid ± |A|·rad, intersected, for
variables affine in x, with the ball's own per-unit bound v(x₀) ± ε‖row‖₂;
activations are monotone, so their intervals are f(l), f(u). At the same
time every activation and max-pool gets its linear relaxation (`relax`,
`pool`) on its input's interval.

The backward pass (CROWN, Zhang et al. 2018) starts from linear functions Λ
of one variable (the margins z_l − z_j of the logits, or ±identity rows of an
intermediate layer) and pulls them back node by node to x: affine nodes by
their transpose, activations by their lower line where the coefficient is
positive and their upper line where it is negative. With `relaxed=False` it
stops at the first non-affine node on each path and uses that variable's
interval there (IBP with the affine layers folded into Λ). At x the linear
function is bounded over the ball ∩ box (`concretize`).

Intermediate bounds. Each variable that feeds an activation or a pool and is
produced by an affine node (a pre-activation) is tightened by a backward
pass started at it ('crown': relaxed; 'ibp': only for variables affine in x,
where it is exact over ball ∩ box), when that pass's Λ fits
`crown_budget`. Wider layers (the conv net's convolutions) keep their
interval bounds: there a backward pass per unit would build a Λ of units ×
layer size per example; with the option `patches`, those whose path to x is
a chain of convolutions, poolings and activations get the same pass in
patches instead (`advjax.certify.patches`: Λ over receptive fields only).

Every bound subtracts tol × (the sum of the absolute values of its terms);
see `advjax.certify.search` for the rounding argument.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from advjax.certify import compose, concretize, pair, patches, pool, relax, rounding, rules
from advjax.certify.interpret import Graph, as_dtype, bind, read

HIGHEST = jax.lax.Precision.HIGHEST


class Plan(NamedTuple):
  """What the passes do at each node (fixed when the graph is traced).

  Attributes:
    kinds: per node, None (x-independent) or its `rules.category`.
    refine: variables tightened by a backward pass of their own.
    affine_x: variables that are affine functions of x (no rounding on the way).
    rounds: node index -> the `rounding.Format` its result is rounded to
      (nodes that compute in a float narrower than float32).
  """
  kinds: tuple
  refine: frozenset
  affine_x: frozenset
  rounds: dict
  patched: frozenset = frozenset()  # refined by `patches` (option patches)
  intervals: int = 0  # pre-activations a relaxed method leaves to intervals


class Ctx(NamedTuple):
  """One example: the graph, its constants and the clean forward values."""
  g: Graph
  plan: Plan
  env: dict
  clean: dict
  rn: dict
  x0: jax.Array
  A: jax.Array
  B: jax.Array
  C: jax.Array
  opts: Any
  lu: dict | None = None  # `lipschitz.unit_bounds` (option lipschitz_units)


def _b(g: Graph, ref) -> bool:
  return isinstance(ref, int) and ref in g.bounded


def _size(g: Graph, i: int) -> int:
  return math.prod(g.shapes[i])


def make_plan(g: Graph, opts) -> Plan:
  """The plan of `opts.method` on g; raises for unsupported primitives."""
  kinds, affine_x, widest, rounds = [], {g.x_id}, {g.x_id: _size(g, g.x_id)}, {}
  for n in g.nodes:
    if n.outs[0] not in g.bounded:
      kinds.append(None)
      continue
    k = rules.category(n, g.bounded)
    ins = [i for i in n.ins if _b(g, i)]
    if k in ("act", "pair") and any(g.shapes[i] != g.shapes[n.outs[0]] for i in ins):
      raise rules.unsupported(n, "an x-dependent operand broadcast against a constant")
    r = rounding.of_node(n, [g.dtypes[i] for i in ins], g.dtypes[n.outs[0]], rules.STRUCTURAL)
    if r is not None:
      rounds[len(kinds)] = r
    kinds.append(k)
    widest[n.outs[0]] = max([_size(g, n.outs[0])] + [widest[i] for i in ins])
    if k == "affine" and r is None and all(i in affine_x for i in ins):
      affine_x.add(n.outs[0])
  feeds = {i for n, k in zip(g.nodes, kinds) if k in ("act", "max", "pair")
           for i in n.ins if _b(g, i)}
  refine, patched, left = set(), set(), 0
  for v in feeds - {g.x_id}:
    fits = 2 * _size(g, v) * widest[v] <= opts.crown_budget
    if kinds[g.producer[v]] != "affine" or (opts.method == "ibp" and v not in affine_x):
      continue
    if fits:
      refine.add(v)
    elif getattr(opts, "patches", False) and patches.chain(g, kinds, rounds, v):
      patched.add(v)
    else:
      left += 1
  return Plan(tuple(kinds), frozenset(refine), frozenset(affine_x), rounds,
              frozenset(patched), left)


def rownorms(g: Graph, plan: Plan, env: dict, dtype) -> dict:
  """Upper bounds on ‖∂v/∂x‖ per unit for variables affine in x (x-free)."""
  rn = {g.x_id: (jnp.ones(g.shapes[g.x_id], dtype), True)}
  for n, kind in zip(g.nodes, plan.kinds):
    o = n.outs[0]
    if kind == "affine" and o in plan.affine_x:
      consts = [None if _b(g, i) else read(env, i) for i in n.ins]
      rn[o] = rules.affine_rownorm(n, [rn[i] if _b(g, i) else None for i in n.ins],
                                   consts, dtype, g.shapes[o])
  return {i: v[0] for i, v in rn.items()}


def _consts(c: Ctx, n) -> list:
  return [None if _b(c.g, i) else as_dtype(read(c.env, i), c.x0.dtype) for i in n.ins]


def relaxation(c: Ctx, k: int, iv, alpha):
  """(lines, out interval, α's default) of node k, an activation or a window
  max, with α's parameters (a ReLU's lower slopes or a pool's upper-line
  weights; None: the defaults)."""
  n = c.g.nodes[k]
  if c.plan.kinds[k] == "max":
    z = next(i for i in n.ins if _b(c.g, i))
    lines = pool.relax(n, *iv[z], c.opts.slack, alpha)
    return lines, pool.interval(n, *iv[z]), pool.default_weights(lines)
  return _act(c, k, iv, alpha)


def _act(c: Ctx, k: int, iv, slope):
  """(lines, out interval, default slope) of an activation node (a rounding
  of its result moves the lines and the interval outward by its error)."""
  n = c.g.nodes[k]
  consts = _consts(c, n)
  p = next(j for j, i in enumerate(n.ins) if _b(c.g, i))
  l, u = iv[n.ins[p]]
  cst = consts[1 - p] if len(n.ins) == 2 else None
  name = n.prim.name
  default = relax.default_slope(name, l, u, cst) if name in ("max", "min") else None
  lines = relax.widen(relax.lines(name, l, u, cst, slope), l, u, c.opts.slack)
  f = lambda z: bind(n, [z if j == p else a for j, a in enumerate(consts)], l.dtype)[0]
  lo, hi = f(l), f(u)  # monotone; outward by the relative slack of f's evaluation
  lo, hi = lo - c.opts.slack * jnp.abs(lo), hi + c.opts.slack * jnp.abs(hi)
  r = c.plan.rounds.get(k)
  if r is not None:
    e = rounding.error(r, lo, hi)
    lines = lines._replace(bl=lines.bl - e, bu=lines.bu + e)
    lo, hi = lo - e, hi + e
  return lines, (lo, hi), default


def forward(c: Ctx, eps, alphas: dict | None = None):
  """Intervals of every bounded variable and the relaxation of every
  non-affine node at radius ε: (intervals, relaxations, α's defaults: ReLU
  slopes and pool weights). `alphas` (node -> those, α-CROWN) replace the
  defaults in every pass above them, the intermediate layers' included."""
  g, dtype = c.g, c.x0.dtype
  tol = c.opts.slack
  lo_x, hi_x = c.x0 - eps, c.x0 + eps
  if c.opts.box:
    lo_x, hi_x = jnp.maximum(lo_x, c.x0 + c.A), jnp.minimum(hi_x, c.x0 + c.B)
  w = tol * (jnp.abs(c.x0) + eps)  # every interval is rounded outward (module doc)
  iv, rl, slopes = {g.x_id: (lo_x - w, hi_x + w)}, {}, {}
  for k, n in enumerate(g.nodes):
    kind, o = c.plan.kinds[k], n.outs[0]
    if kind == "affine":
      ivs = [iv[i] if _b(g, i) else None for i in n.ins]
      l, u = rules.affine_interval(n, ivs, _consts(c, n), dtype, g.shapes[o], tol)
      if k in c.plan.rounds:  # the result as the model rounds it
        rl[k] = rounding.error(c.plan.rounds[k], l, u)
        l, u = l - rl[k], u + rl[k]
      elif o in c.rn:  # the ball's exact per-unit bound (affine in x)
        w = eps * c.rn[o] * (1 + tol) + tol * _scale(l, u)
        l, u = jnp.maximum(l, c.clean[o] - w), jnp.minimum(u, c.clean[o] + w)
      elif c.lu is not None and o in c.lu:  # the layer norms' per-unit bound
        w = eps * c.lu[o] * (1 + tol) + tol * _scale(l, u)
        l, u = jnp.maximum(l, c.clean[o] - w), jnp.minimum(u, c.clean[o] + w)
    elif kind in ("act", "max"):
      rl[k], (l, u), slopes[k] = relaxation(c, k, iv, (alphas or {}).get(k))
    elif kind == "pair":  # max/min of two x-dependent operands (MinMax)
      (la, ua), (lb, ub) = iv[n.ins[0]], iv[n.ins[1]]
      rl[k] = pair.lines(n.prim.name, la, ua, lb, ub, c.opts.slack)
      l, u = pair.interval(n.prim.name, la, ua, lb, ub)
    else:
      continue
    iv[o] = (l, u)
    if o in c.plan.refine or o in c.plan.patched:
      lo_o, up_o = (refine(c, iv, rl, o, eps) if o in c.plan.refine
                    else compose.refine(c, rl, o, eps))
      iv[o] = (jnp.maximum(l, lo_o), jnp.minimum(u, up_o))
  return iv, rl, {k: v for k, v in slopes.items() if v is not None}


def _scale(l, u):
  """max(|l|, |u|): a magnitude of the clean value's terms (inside [l, u])."""
  return jnp.maximum(jnp.abs(l), jnp.abs(u))


def refine(c: Ctx, iv, rl, v: int, eps):
  """(lower, upper) of variable v by one backward pass from ±identity rows."""
  shape = c.g.shapes[v]
  n = math.prod(shape)
  eye = jnp.eye(n, dtype=c.x0.dtype)
  lam = jnp.concatenate([eye, -eye]).reshape((2 * n,) + shape)
  low = lower(c, iv, rl, v, lam, c.opts.method != "ibp", eps,
              c.opts.intermediate_steps)
  return low[:n].reshape(shape), -low[n:].reshape(shape)


def pullback(c: Ctx, iv, rl, v, lam, relaxed: bool):
  """Λ·v ≥ Λ_x·x + off over the set: (Λ_x (S, *x), off (S,), |terms| (S,))."""
  g = c.g
  S = lam.shape[0]
  zero = jnp.zeros((S,), lam.dtype)
  if not _b(g, v):  # the model ignores x here
    val = jnp.asarray(read(c.env, v), lam.dtype)
    t = jnp.sum(lam * val, tuple(range(1, lam.ndim)))
    return jnp.zeros((S,) + c.x0.shape, lam.dtype), t, jnp.abs(t)
  acc, off, mag = {v: lam}, zero, zero
  add = lambda i, L: acc.__setitem__(i, acc[i] + L if i in acc else L)
  for k in range(g.producer.get(v, -1), -1, -1):
    n = g.nodes[k]
    o, kind = n.outs[0], c.plan.kinds[k]
    if o not in acc:
      continue
    L = acc.pop(o)
    axes = tuple(range(1, L.ndim))
    if kind == "affine":
      shapes = [g.shapes[i] if _b(g, i) else None for i in n.ins]
      cots, o1, m1 = rules.affine_pull(n, L, shapes, _consts(c, n), c.x0.dtype)
      for p, cot in cots.items():
        add(n.ins[p], cot)
      if k in rl:  # its rounding error: Λ·y ≥ Λ·f(...) − |Λ|·err
        e = jnp.sum(jnp.abs(L) * rl[k], axes)
        o1, m1 = o1 - e, m1 + e
    elif relaxed and kind == "act":
      ln = rl[k]
      pos, neg = jnp.maximum(L, 0), jnp.minimum(L, 0)
      add(next(i for i in n.ins if _b(g, i)), pos * ln.al + neg * ln.au)
      t1, t2 = pos * ln.bl, neg * ln.bu
      o1, m1 = jnp.sum(t1 + t2, axes), jnp.sum(jnp.abs(t1) + jnp.abs(t2), axes)
    elif relaxed and kind == "pair":
      la, lb, o1, m1 = pair.pull(L, rl[k])
      add(n.ins[0], la)
      add(n.ins[1], lb)
    elif relaxed and kind == "max":
      z = next(i for i in n.ins if _b(g, i))
      L_in, o1, m1 = pool.pull(n, L, rl[k], g.shapes[z], c.x0.dtype)
      add(z, L_in)
    else:  # the frontier: the interval of o, widened by the slack
      l, u = iv[o]  # rounded outward when made; the terms' slack comes below
      tol = c.opts.slack
      l, u = l - tol * jnp.abs(l), u + tol * jnp.abs(u)
      t = jnp.maximum(L, 0) * l + jnp.minimum(L, 0) * u
      o1, m1 = jnp.sum(t, axes), jnp.sum(jnp.abs(t), axes)
    off, mag = off + o1, mag + m1
  lam_x = acc.pop(g.x_id, jnp.zeros((S,) + c.x0.shape, lam.dtype))
  return lam_x, off, mag


def at_input(c: Ctx, lam_x, off, mag, eps, steps: int):
  """The lower bound of Λ_x·x + off over x₀ + (ball(ε) ∩ box), minus the slack."""
  S = lam_x.shape[0]
  a = lam_x.reshape(S, -1)
  x0 = c.x0.reshape(-1)
  val = jnp.dot(a, x0, precision=HIGHEST) + off
  mag = mag + jnp.dot(jnp.abs(a), jnp.abs(x0), precision=HIGHEST)
  if c.opts.box:
    g, gm = concretize.ball_box(a, c.A.reshape(-1), c.B.reshape(-1), eps, steps)
  else:
    g, gm = concretize.ball(a, eps)
  return val + g - c.opts.slack * (mag + gm)


def lower(c: Ctx, iv, rl, v, lam, relaxed: bool, eps, steps: int):
  """Lower bounds (S,) of Λ·v over the set at radius ε."""
  return at_input(c, *pullback(c, iv, rl, v, lam, relaxed), eps, steps)


def final(c: Ctx, iv, rl, eps, fold: bool = True):
  """Certified lower bounds of z_l − z_j (+inf at j = l) from the passes'
  intervals and relaxations. 'crown' takes, per margin, the larger of the
  relaxed bound and the folded interval bound (both are sound)."""
  steps = c.opts.concretize_steps
  relaxed = c.opts.method != "ibp"
  low = jnp.full((c.C.shape[0],), -jnp.inf, c.x0.dtype)
  if fold or not relaxed:
    low = lower(c, iv, rl, c.g.out, c.C, False, eps, steps)
  if relaxed:
    low = jnp.maximum(low, lower(c, iv, rl, c.g.out, c.C, True, eps, steps))
  low = jnp.where(jnp.isnan(low), -jnp.inf, low)  # a possible overflow: not certified
  return jnp.where(jnp.all(c.C == 0, 1), jnp.inf, low)


def margins(c: Ctx, eps):
  """Certified lower bounds of the margins at radius ε (IBP or CROWN)."""
  iv, rl, _ = forward(c, eps)
  return final(c, iv, rl, eps)
