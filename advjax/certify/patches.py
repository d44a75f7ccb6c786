"""CROWN's intermediate bounds through convolutions without a dense Λ (patches).

A backward pass started at a conv layer's pre-activation v (H×W×C units, ±
identity rows) with a dense Λ is units × layer size per example. Here (the
*patches* mode of auto_LiRPA, Xu et al. NeurIPS 2020) the rows of one output
position (h, w) of v (2C rows: every channel, both signs) are kept, at every
variable y below, only over their receptive field: a patch P of shape
(2C, KH, KW, C_y) whose origin in y is (h, w)·S_y + O_y. The window (KH, KW)
and the geometry (S_y, O_y) are static and read off the chain of nodes from v
to x (`chain`); a position's origin is all a row needs to find its part of a
full-layer array (`dynamic_slice` of the array padded far enough).

Pull-backs, each the dense pass's own rule restricted to the patch:
  * conv (any stride, dilation, feature groups; padding only moves the
    origin): the VJP of the same convolution with padding VALID on a patch of
    the input, i.e. the transposed convolution on the patch;
  * sum and max pooling likewise (max: `pool`'s DeepPoly rule, its one-hot
    window element and dominance gathered at the patch);
  * activations: the relaxation lines gathered at the patch;
  * add/sub of a constant, constant padding: the constant's part Λ·f(0)
    goes to the offset; mul/div by a constant: the constant gathered.
Positions of a patch that lie outside its variable's image (padding) get
coefficient 0 (a mask after every change of geometry): there the network sees
a constant, already counted. At x the linear bound is concretised over
ball ∩ box on the patch's coordinates (x₀, A, B cropped the same way); the
zero coefficients elsewhere contribute nothing, so the bound is the dense
pass's, up to the order of float64 sums.

Positions are processed in chunks (`lax.map`): memory per example is about
`patch_budget` elements per live patch. Variables whose chain has anything
else (a residual add, a flatten, a rounding in a narrow float) keep the
dense pass or their intervals (`bounds.make_plan`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from advjax.certify import concretize, pool
from advjax.certify.interpret import Graph, as_dtype, bind, read

HIGHEST = lax.Precision.HIGHEST
SAME = frozenset({"reshape", "broadcast_in_dim", "squeeze", "expand_dims",
                  "convert_element_type", "copy", "copy_p"})
NHWC = ((0, 3, 1, 2), (0, 3, 1, 2))  # lhs and out specs of a conv over (N, H, W, C)


class Step(NamedTuple):
  """One node of a chain: z = node(y, constants), y the bounded input.

  kind: 'same', 'neg', 'scale', 'shift', 'pad', 'conv', 'window' (sum or max
  pooling) or 'act'; stride, lo, win: origin_y = origin_z·stride − lo and
  KH_y = (KH_z − 1)·stride + win, per spatial axis."""
  k: int
  kind: str
  z: int
  y: int
  pos: int
  stride: tuple = (1, 1)
  lo: tuple = (0, 0)
  win: tuple = (1, 1)


class Frame(NamedTuple):
  """Where a variable's patches lie: window, origin = o_v·S + O, and the
  padding that puts every origin's patch inside the padded array."""
  K: tuple
  S: tuple
  O: tuple
  pad: tuple  # ((lo_h, hi_h), (lo_w, hi_w))


def image(shape):
  """(number of leading 1s, (H, W, C)) of an image-like shape, else None."""
  lead = 0
  while len(shape) - lead > 3 and shape[lead] == 1:
    lead += 1
  return (lead, tuple(shape[lead:])) if len(shape) - lead == 3 else None


def _spatial(p, lead, one=1):
  """The two spatial entries of a per-dimension parameter; None when the
  batch/channel entries are not `one` (a window across channels)."""
  p = tuple(p)
  rest = p[:lead] + (p[-1],)
  if len(p) != lead + 3 or any(e != one for e in rest) or lead > 1:
    return None
  return p[lead:lead + 2]


def _step(g: Graph, kinds, k: int):
  """The Step of node k, or None when the patches have no rule for it."""
  n, name = g.nodes[k], g.nodes[k].prim.name
  pos = [j for j, i in enumerate(n.ins) if isinstance(i, int) and i in g.bounded]
  z = n.outs[0]
  if len(pos) != 1 or image(g.shapes[z]) is None:
    return None
  y = n.ins[pos[0]]
  iy, iz = image(g.shapes[y]), image(g.shapes[z])
  base = Step(k, "", z, y, pos[0])
  if iy is not None and name in SAME and kinds[k] == "affine":  # leading 1s only
    dims = n.params.get("broadcast_dimensions")
    aligned = dims is None or tuple(dims) == tuple(
        range(len(g.shapes[z]) - len(g.shapes[y]), len(g.shapes[z])))
    return base._replace(kind="same") if iy[1] == iz[1] and aligned else None
  if iy is None or iy[0] != iz[0] or iy[0] > 1:
    return None
  if kinds[k] == "act":
    return base._replace(kind="act")
  p = n.params
  if name == "neg" or name in ("mul", "div") and (name == "mul" or pos[0] == 0):
    return base._replace(kind="neg" if name == "neg" else "scale")
  if name in ("add", "sub", "add_any"):
    return base._replace(kind="shift")
  if name == "pad":
    cfg = p["padding_config"]
    rest = [cfg[j] for j in range(len(cfg)) if j not in (iy[0], iy[0] + 1)]
    if any(c != (0, 0, 0) for c in rest) or any(cfg[iy[0] + j][2] for j in (0, 1)):
      return None
    return base._replace(kind="pad", lo=tuple(cfg[iy[0] + j][0] for j in (0, 1)))
  if name == "conv_general_dilated":
    dn = p["dimension_numbers"]
    if pos[0] != 0 or (dn.lhs_spec, dn.out_spec) != NHWC or iy[0] != 1 or (
        tuple(p["lhs_dilation"]) != (1, 1) or p["batch_group_count"] != 1):
      return None
    kh, kw = (g.shapes[n.ins[1]][d] for d in dn.rhs_spec[2:])
    dh, dw = p["rhs_dilation"]
    return base._replace(kind="conv", stride=tuple(p["window_strides"]),
                         lo=tuple(a for a, _ in p["padding"]),
                         win=((kh - 1) * dh + 1, (kw - 1) * dw + 1))
  if name in ("reduce_window_sum", "reduce_window_max"):
    lead = iy[0]
    win, st = _spatial(p["window_dimensions"], lead), _spatial(p["window_strides"], lead)
    pads = _spatial(p["padding"], lead, (0, 0))
    dil = set(p["base_dilation"]) | set(p["window_dilation"])
    if None in (win, st, pads) or dil != {1}:
      return None
    return base._replace(kind="window", stride=st, lo=tuple(a for a, _ in pads), win=win)
  return None


def chain(g: Graph, kinds, rounds, v: int):
  """The Steps from v's producer down to x, or None when some node on the
  way has no patch rule (or rounds its result: the dense pass bounds those)."""
  if image(g.shapes[g.x_id]) is None or image(g.shapes[v]) is None:
    return None
  steps, cur = [], v
  while cur != g.x_id:
    k = g.producer.get(cur)
    if k is None or k in rounds or kinds[k] is None:
      return None
    s = _step(g, kinds, k)
    if s is None:
      return None
    steps.append(s)
    cur = s.y
  return tuple(steps)


def frames(g: Graph, steps, v: int) -> dict:
  """var -> its Frame, from v (one unit: a 1×1 patch at its own position)."""
  Hv, Wv = image(g.shapes[v])[1][:2]
  fr = {v: Frame((1, 1), (1, 1), (0, 0), ())}
  for s in steps:
    f = fr[s.z]
    K = tuple((k - 1) * st + w for k, st, w in zip(f.K, s.stride, s.win))
    fr[s.y] = Frame(K, tuple(a * st for a, st in zip(f.S, s.stride)),
                    tuple(o * st - lo for o, st, lo in zip(f.O, s.stride, s.lo)), ())
  for var, f in fr.items():
    H, W = image(g.shapes[var])[1][:2]
    pad = []
    for K, S, O, n, last in zip(f.K, f.S, f.O, (H, W), (Hv - 1, Wv - 1)):
      lo_o, hi_o = O, O + S * last
      pad.append((max(0, -lo_o), max(0, hi_o + K - n)))
    fr[var] = f._replace(pad=tuple(pad))
  return fr


def _img(c, arr, var):
  """A full array of variable var (or (n, *shape)) in image form (…, H, W, C)."""
  shape = image(c.g.shapes[var])[1]
  return jnp.reshape(arr, arr.shape[:arr.ndim - len(c.g.shapes[var])] + shape)


def padded(arr, f: Frame, fill=0.0):
  lead = [(0, 0)] * (arr.ndim - 3)
  return jnp.pad(arr, lead + list(f.pad) + [(0, 0)], constant_values=fill)


def at(arr, f: Frame, o_v):
  """The patch of a padded image-form array at the origin of position o_v."""
  o = [(ov * S + O + p[0]).astype(jnp.int32) for ov, S, O, p in zip(o_v, f.S, f.O, f.pad)]
  lead, zero = arr.ndim - 3, jnp.zeros((), jnp.int32)
  return lax.dynamic_slice(arr, (zero,) * lead + (o[0], o[1], zero),
                           arr.shape[:lead] + (f.K[0], f.K[1], arr.shape[-1]))


def _consts(c, n):
  return [None if isinstance(i, int) and i in c.g.bounded
          else as_dtype(read(c.env, i), c.x0.dtype) for i in n.ins]


def _f0(c, s: Step):
  """The node at y = 0 (its constant part), in z's image form."""
  n = c.g.nodes[s.k]
  args = _consts(c, n)
  args[s.pos] = jnp.zeros(c.g.shapes[s.y], c.x0.dtype)
  return _img(c, bind(n, args, c.x0.dtype)[0], s.z)


def layer_arrays(c, rl, steps, fr) -> dict:
  """Every full-layer array a pass gathers from, padded for its frame."""
  dtype, pre = c.x0.dtype, {}
  for s in steps:
    n, f = c.g.nodes[s.k], fr[s.z]
    if s.kind == "act":
      pre[s.k] = tuple(padded(_img(c, a, s.z), f) for a in rl[s.k])
    elif s.kind in ("shift", "pad"):
      pre[s.k] = padded(_f0(c, s), f)
    elif s.kind == "scale":
      cst = jnp.broadcast_to(_consts(c, n)[1 - s.pos], c.g.shapes[s.z])
      pre[s.k] = padded(_img(c, cst, s.z), f, 1.0 if n.prim.name == "div" else 0.0)
    elif s.kind == "window" and n.prim.name == "reduce_window_max":
      r = rl[s.k]
      pre[s.k] = pool.PoolRelax(padded(_img(c, r.onehot, s.z), f),
                                padded(_img(c, r.dom, s.z), f, False),
                                padded(_img(c, r.top, s.z), f))
    if s.kind in ("conv", "window", "pad"):  # the image of y: where patches count
      shape = image(c.g.shapes[s.y])[1][:2] + (1,)
      pre[("mask", s.y)] = padded(jnp.ones(shape, dtype), fr[s.y])
  fx = fr[c.g.x_id]
  for name, a in (("x0", c.x0), ("A", c.A), ("B", c.B)):  # 0 outside the image:
    pre[name] = padded(_img(c, a, c.g.x_id), fx)  # no room to move, no value
  pre["ball"] = not c.opts.box  # the ball alone (A, B infinite)
  return pre


def _valid(n):
  """The node with no padding: its map from a patch of y to a patch of z."""
  key = "padding"
  pad = n.params[key]
  return n._replace(params={**n.params, key: tuple((0, 0) for _ in pad)})


def pull(c, s: Step, fr, pre, P, o_v):
  """(P at y, offset, |offset terms|) of the rows' patch P at z = node(y)."""
  R, dtype, n = P.shape[0], c.x0.dtype, c.g.nodes[s.k]
  zero = jnp.zeros((R,), dtype)
  axes = (1, 2, 3)
  if s.kind == "act":
    al, bl, au, bu = (at(a, fr[s.z], o_v) for a in pre[s.k])
    pos, neg = jnp.maximum(P, 0), jnp.minimum(P, 0)
    t1, t2 = pos * bl, neg * bu
    return pos * al + neg * au, jnp.sum(t1 + t2, axes), jnp.sum(jnp.abs(t1) + jnp.abs(t2), axes)
  if s.kind == "same":
    return P, zero, zero
  if s.kind == "neg":
    return -P, zero, zero
  if s.kind == "scale":
    m = at(pre[s.k], fr[s.z], o_v)
    return (P / m if n.prim.name == "div" else P * m), zero, zero
  if s.kind in ("shift", "pad"):
    f0 = at(pre[s.k], fr[s.z], o_v)
    off, mag = jnp.sum(P * f0, axes), jnp.sum(jnp.abs(P) * jnp.abs(f0), axes)
    sign = -1.0 if n.prim.name == "sub" and s.pos == 1 else 1.0
    P = sign * P
    if s.kind == "shift":
      return P, off, mag
    return P * at(pre[("mask", s.y)], fr[s.y], o_v), off, mag
  return _pull_window(c, s, fr, pre, P, o_v)


def _pull_window(c, s: Step, fr, pre, P, o_v):
  """P through a conv or a sum/max pool: the node's own VJP on a patch of y
  (padding VALID: a patch position in the padding is masked out after)."""
  n, dtype, R = _valid(c.g.nodes[s.k]), c.x0.dtype, P.shape[0]
  lead = (1,) * image(c.g.shapes[s.y])[0]
  y_shape = lead + fr[s.y].K + (image(c.g.shapes[s.y])[1][2],)
  L = P.reshape((R,) + lead + P.shape[1:])
  if n.prim.name == "reduce_window_max":  # `pool`'s rule, gathered at the patch
    r, f = pre[s.k], fr[s.z]
    rz = pool.PoolRelax(at(r.onehot, f, o_v).reshape((-1,) + L.shape[1:]),
                        at(r.dom, f, o_v).reshape(L.shape[1:]),
                        at(r.top, f, o_v).reshape(L.shape[1:]))
    L_y, off, mag = pool.pull(n, L, rz, y_shape, dtype)
  else:
    consts = _consts(c, n)
    f = lambda b: bind(n, [b if j == s.pos else a for j, a in enumerate(consts)], dtype)[0]
    _, back = jax.vjp(f, jnp.zeros(y_shape, dtype))
    L_y, = jax.vmap(back)(L)
    off = mag = jnp.zeros((R,), dtype)
  mask = at(pre[("mask", s.y)], fr[s.y], o_v)
  return L_y.reshape((R,) + y_shape[len(lead):]) * mask, off, mag


def at_x(c, f: Frame, pre, P, off, mag, o_v, eps):
  """The lower bound of the rows' linear function of x over ball ∩ box, on the
  patch's coordinates (`bounds.at_input` with x₀, A, B cropped)."""
  R = P.shape[0]
  a = P.reshape(R, -1)
  x0 = at(pre["x0"], f, o_v).reshape(-1)
  val = jnp.dot(a, x0, precision=HIGHEST) + off
  mag = mag + jnp.dot(jnp.abs(a), jnp.abs(x0), precision=HIGHEST)
  if pre["ball"]:
    g, gm = concretize.ball(a, eps)
  else:
    A, B = (at(pre[k], f, o_v).reshape(1, -1) for k in ("A", "B"))
    g, gm = concretize.ball_box(a, A, B, eps, c.opts.intermediate_steps)
  return val + g - c.opts.slack * (mag + gm)


def identity(c, v: int):
  """The ±identity rows of one position of v: (2C, 1, 1, C)."""
  C = image(c.g.shapes[v])[1][2]
  eye = jnp.eye(C, dtype=c.x0.dtype)
  return jnp.concatenate([eye, -eye]).reshape(2 * C, 1, 1, C)


def pulled(c, steps, fr, pre, P, o_v):
  """(P, offset, |offset terms|) of the rows P pulled through steps."""
  off = mag = jnp.zeros((P.shape[0],), c.x0.dtype)
  for s in steps:
    P, o1, m1 = pull(c, s, fr, pre, P, o_v)
    off, mag = off + o1, mag + m1
  return P, off, mag


def position(c, steps, fr, pre, o_v, eps):
  """Lower bounds (2C,) of ±v at one output position (h, w) of v."""
  P, off, mag = pulled(c, steps, fr, pre, identity(c, steps[0].z), o_v)
  return at_x(c, fr[c.g.x_id], pre, P, off, mag, o_v, eps)


def peak(g: Graph, steps, fr) -> int:
  """Elements of the largest patch of one position's rows (2C × window)."""
  C = image(g.shapes[steps[0].z])[1][2]
  return 2 * C * max(np.prod(f.K) * image(g.shapes[var])[1][2] for var, f in fr.items())


def refine(c, rl, v: int, eps):
  """(lower, upper) of variable v by the patches backward pass along its
  chain (see the module doc): the same bounds as `bounds.refine`'s dense pass."""
  steps = chain(c.g, c.plan.kinds, c.plan.rounds, v)
  fr = frames(c.g, steps, v)
  pre = layer_arrays(c, rl, steps, fr)
  return over_positions(c, v, lambda o: position(c, steps, fr, pre, o, eps),
                        peak(c.g, steps, fr))


def over_positions(c, v: int, one, elements: int):
  """(lower, upper) of v from one(origin) -> (2C,) lower bounds of ±v at each
  position, in chunks of at most patch_budget // elements positions."""
  H, W, C = image(c.g.shapes[v])[1]
  hh, ww = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
  origins = jnp.asarray(np.stack([hh.ravel(), ww.ravel()], -1), jnp.int32)
  per = max(1, c.opts.patch_budget // max(1, int(elements)))
  if per >= H * W:
    low = jax.vmap(one)(origins)
  else:  # chunks of positions in sequence: memory bounded by patch_budget
    low = lax.map(one, origins, batch_size=per)
  low = jnp.where(jnp.isnan(low), -jnp.inf, low)  # an overflow: no bound, not NaN
  lo, up = low[:, :C], -low[:, C:]
  return lo.reshape(c.g.shapes[v]), up.reshape(c.g.shapes[v])
