"""Random small nets built from every primitive `advjax.certify` has a rule for,
and the searches that try to break a certificate on them (issue 27).

A net is a *program* (a hashable tuple of blocks, so each compiles once) and
weights drawn per seed (jit arguments: one program serves many draws). Inputs
are 2-D (checked against a dense grid) or 5×5 images (checked by PGD-L2);
blocks act on an NHWC hidden state: convolutions (stride, dilation, groups,
explicit, SAME or VALID padding), activations (ReLU, sigmoid, tanh, clip,
max/min with constants), max and average pooling, constant and interior
padding, gathers with a fill value, selects with constant cases, casts
through bfloat16 and float16, a bfloat16 convolution, residual adds,
concatenation, scaling, transposes, reversal and slices.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

K = 3
ACTS = ("relu", "sigmoid", "tanh", "clip", "max_c", "min_c")
BLOCKS = ("conv", "act", "act", "maxpool", "avgpool", "pad", "gather", "select", "cast",
          "conv_bf16", "residual", "concat", "scale", "transpose", "rev", "slice")
DN = ("NHWC", "HWIO", "NHWC")


def _conv_block(rng, c):
  k, s, d = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(1, 3))
  cout = int(rng.choice([2, 4]))
  groups = int(rng.choice([g for g in (1, 2) if c % g == 0 and cout % g == 0]))
  pads = ["SAME", "VALID", ((1, 0), (0, 2))]
  return ("conv", cout, k, s, d, groups, pads[int(rng.integers(3))])


def program(seed: int, image: bool = False, depth: int = 5) -> tuple:
  """A random program: its blocks, each a hashable tuple."""
  rng = np.random.default_rng(seed)
  blocks = []
  for _ in range(depth):
    b = str(rng.choice(BLOCKS))
    if b in ("conv", "conv_bf16"):
      blocks.append((b,) + _conv_block(rng, 4)[1:])  # groups checked by `valid`
    elif b == "act":
      blocks.append(("act", str(rng.choice(ACTS))))
    elif b in ("maxpool", "avgpool"):
      blocks.append((b, int(rng.integers(1, 3)), int(rng.integers(1, 3)),
                     str(rng.choice(["SAME", "VALID"]))))
    elif b == "pad":
      blocks.append(("pad", float(rng.choice([-1.0, 0.7, 0.0])), int(rng.integers(0, 2))))
    elif b in ("gather", "select", "scale"):
      blocks.append((b, float(rng.choice([-1.0, 0.5, 2.0]))))
    elif b == "cast":
      blocks.append(("cast", str(rng.choice(["bfloat16", "float16"]))))
    else:
      blocks.append((b,))
  blocks.append(("act", str(rng.choice(ACTS))))  # a nonlinearity before the head
  return ("image" if image else "2d",) + tuple(blocks)


def _fit(h, block):
  """A block's channel count (convs map to their own count)."""
  return block[1] if block[0] in ("conv", "conv_bf16") else h.shape[-1]


def _apply_block(b, p, h):
  name = b[0]
  if name in ("conv", "conv_bf16", "residual"):
    if name == "residual":
      _, cout, k, s, d, groups, pad = ("conv", h.shape[-1], 3, 1, 1, 1, "SAME")
    else:
      _, cout, k, s, d, groups, pad = b
    W, bias = p["W"], p["b"]
    lhs, rhs = (h.astype(jnp.bfloat16), W.astype(jnp.bfloat16)) if name == "conv_bf16" else (h, W)
    out = lax.conv_general_dilated(lhs, rhs, (s, s), pad, rhs_dilation=(d, d),
                                   dimension_numbers=DN, feature_group_count=groups)
    out = out.astype(jnp.float32) + bias
    return h + out if name == "residual" else out
  if name == "act":
    a = b[1]
    if a in ("relu", "sigmoid", "tanh"):
      return {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}[a](h)
    if a == "clip":
      return jnp.clip(h, -0.5, 0.7)
    return (jnp.maximum if a == "max_c" else jnp.minimum)(h, p["c"])
  if name in ("maxpool", "avgpool"):
    _, w, s, pad = b
    dims, strides = (1, w, w, 1), (1, s, s, 1)
    if name == "maxpool":
      return lax.reduce_window(h, -jnp.inf, lax.max, dims, strides, pad)
    return lax.reduce_window(h, 0.0, lax.add, dims, strides, pad) / (w * w)
  if name == "pad":
    return lax.pad(h, jnp.float32(b[1]), ((0, 0, 0), (1, 0, b[2]), (0, 1, 0), (0, 0, 0)))
  if name == "gather":
    idx = jnp.asarray(list(range(h.shape[-1])) + [h.shape[-1] + 1, 0])
    return jnp.take(h, idx, axis=-1, mode="fill", fill_value=b[1])
  if name == "select":
    return jnp.where(p["mask"], h, b[1])
  if name == "cast":
    return h.astype(b[1]).astype(jnp.float32)
  if name == "concat":
    return jnp.concatenate([h, jax.nn.relu(-h)], -1)
  if name == "scale":
    return -(h * b[1]) + h / 4.0
  if name == "transpose":
    return jnp.transpose(h, (0, 2, 1, 3))
  if name == "rev":
    return h[:, ::-1]
  if name == "slice":
    return h[:, 1:] if h.shape[1] > 1 else h
  raise ValueError(name)


@functools.lru_cache(maxsize=None)
def net(prog: tuple):
  """apply(params, x) -> (B, K) logits of a program (one object per program)."""
  def apply(params, x):
    h = x
    if prog[0] == "2d":
      h = (x @ params["in"]["W"] + params["in"]["b"]).reshape(x.shape[0], 4, 4, 2)
    for k, b in enumerate(prog[1:]):
      h = _apply_block(b, params.get(str(k), {}), h)
    return h.reshape(h.shape[0], -1) @ params["out"]["W"] + params["out"]["b"]
  return apply


def input_shape(prog):
  return (2,) if prog[0] == "2d" else (5, 5, 1)


def _block_params(b, h, rng, scale):
  name = b[0]
  if name in ("conv", "conv_bf16", "residual"):
    cout, k, groups = (h.shape[-1], 3, 1) if name == "residual" else (b[1], b[2], b[5])
    fan = k * k * h.shape[-1] // groups
    W = rng.normal(size=(k, k, h.shape[-1] // groups, cout)) * scale / np.sqrt(fan)
    return {"W": W.astype(np.float32), "b": (0.1 * rng.normal(size=cout)).astype(np.float32)}
  if name == "act" and b[1] in ("max_c", "min_c"):
    return {"c": (0.3 * rng.normal(size=h.shape[1:])).astype(np.float32)}
  if name == "select":
    return {"mask": rng.random(h.shape[1:]) < 0.7}
  return {}


def params(prog: tuple, seed: int, scale: float = 1.0):
  """Random weights of a program (He-like, times `scale`)."""
  rng = np.random.default_rng(seed)
  shape = input_shape(prog)
  p = {}
  h = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
  if prog[0] == "2d":
    p["in"] = {"W": (rng.normal(size=(2, 32)) * 2 * scale).astype(np.float32),
               "b": rng.normal(size=32).astype(np.float32)}
    h = jax.ShapeDtypeStruct((1, 4, 4, 2), jnp.float32)
  for k, b in enumerate(prog[1:]):
    p[str(k)] = _block_params(b, h, rng, scale)
    h = jax.eval_shape(functools.partial(_apply_block, b), p[str(k)], h)
  n = int(np.prod(h.shape[1:]))
  p["out"] = {"W": (rng.normal(size=(n, K)) * scale / np.sqrt(n)).astype(np.float32),
              "b": (0.1 * rng.normal(size=K)).astype(np.float32)}
  return jax.tree_util.tree_map(jnp.asarray, p)


def valid(prog: tuple) -> bool:
  """Whether every block keeps a non-empty hidden state."""
  try:
    params(prog, 0)
    return True
  except Exception:  # pylint: disable=broad-except  # a stride or window too large
    return False


def points(apply, p, prog, n: int, seed: int):
  """n points of the box: half the nearest the decision boundary among 256
  random ones (small relative margin), the rest random, one on a face."""
  rng = np.random.default_rng(seed)
  cand = rng.random((256,) + input_shape(prog)).astype(np.float32)
  z = np.asarray(jax.jit(apply)(p, jnp.asarray(cand)))
  top = np.sort(z, 1)
  rel = (top[:, -1] - top[:, -2]) / (1e-6 + np.abs(z).max(1))
  near = np.argsort(rel)[: n // 2]
  out = np.concatenate([cand[near], cand[-(n - n // 2):]])
  out[-1].reshape(-1)[0] = 0.0
  return out


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def pgd(apply, p, x0, label, rad, steps: int = 40, restarts: int = 4, key=None):
  """The largest max_{j≠l} z_j − z_l found by PGD-L2 inside ball(rad) ∩ [0, 1]
  (per example; > 0: a misclassified point inside the radius), relative to
  the logits' scale at x0."""
  B = x0.shape[0]
  flat = lambda v: v.reshape(B, -1)
  scale = 1e-6 + jnp.max(jnp.abs(apply(p, x0)), 1)

  def gap(x):
    z = apply(p, x)
    zl = jnp.take_along_axis(z, label[:, None], 1)[:, 0]
    return jnp.max(jnp.where(jnp.arange(z.shape[1]) == label[:, None], -jnp.inf, z), 1) - zl

  def project(x):
    r = flat(x - x0)
    n = jnp.linalg.norm(r, axis=1, keepdims=True)
    r = r * jnp.minimum(1.0, rad[:, None] / jnp.maximum(n, 1e-30))
    return jnp.clip(x0 + r.reshape(x0.shape), 0.0, 1.0)

  def one(k):
    x = project(x0 + jax.random.normal(k, x0.shape) * (rad / np.sqrt(x0[0].size)).reshape(
        (B,) + (1,) * (x0.ndim - 1)))

    def step(_, c):
      x, best = c
      g = flat(jax.grad(lambda v: jnp.sum(gap(v)))(x))
      g = g / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), 1e-30)
      x = project(x + (g * (rad[:, None] / 8)).reshape(x0.shape))
      return x, jnp.maximum(best, gap(x))

    return jax.lax.fori_loop(0, steps, step, (x, gap(x)))[1]

  best = jnp.max(jax.vmap(one)(jax.random.split(key, restarts)), 0)
  return best / scale
