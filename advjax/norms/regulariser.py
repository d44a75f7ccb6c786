"""Training with the layer bounds in the loss: the paper's suggested regulariser (§4.3).

§4.3 bounds a network's instability by the product of per-layer upper
Lipschitz bounds and suggests "penalizing each upper Lipschitz bound". Here a
layer's bound is its linear map's operator norm σ_k (dense: ‖W‖₂; conv: the
conv as a linear map on its input shape, the operator Table 5 uses), times
the constants of the parameter-free layers after it (¼ per sigmoid, max-pool
window counts; `advjax.lipschitz`): L_k, with ∏ L_k = Table 5's product.

σ_k comes from a power iteration whose vectors persist between training steps
as optax-style state (`init`, `update`): one or a few iterations per step
track σ_k while the weights move (Miyato et al. 2018; Gouk et al.). The
estimate ‖A_k v‖ with v under `stop_gradient` is differentiable in the
weights (gradient u vᵀ) and approaches σ_k from below.

Objectives: `penalty` ('sum': λ Σ L_k, the paper's suggestion; 'log':
λ Σ log L_k = λ log ∏ L_k, the product) and Lipschitz-margin training (LMT,
Tsuzuku et al. 2018): non-true logits raised by √2·L·ε, L = ∏ L_k, so that a
positive training margin certifies radius ε. `extra_loss` wires them into
`train.train` through `train.ExtraLoss`; its state (the vectors) is
checkpointed with the parameters, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from advjax import models, train
from advjax.norms import layers as lipschitz, spectral

PENALTIES = ("none", "sum", "log")
LOG_FLOOR = 1e-30  # the smallest layer bound the 'log' penalty reads


class RegConfig(NamedTuple):
  """What is added to the loss (hashable; the defaults are plain training).

  Attributes:
    penalty: 'none', 'sum' (λ Σ_k L_k) or 'log' (λ Σ_k log L_k).
    strength: λ.
    lmt_eps: LMT's L2 radius ε (0: off); non-true logits + √2·L·ε.
    iters: power iterations per training step.
    refresh_iters: power iterations at the start of every epoch (the first
      one starts from random vectors: it must converge there).
    seed: the random start vectors'.
  """
  penalty: str = "none"
  strength: float = 0.0
  lmt_eps: float = 0.0
  iters: int = 1
  refresh_iters: int = 30
  seed: int = 0


class Operator(NamedTuple):
  """One linear layer's map and the constant factor of the layers after it."""
  name: str
  kind: str  # 'dense', 'conv' or 'matrix' (a conv's kernel as a matrix: `kernel_matrix_bound`)
  input_shape: tuple[int, ...]  # no batch axis
  kernel_shape: tuple[int, ...]
  stride: int
  padding: Any
  factor: float  # ∏ bounds of the parameter-free layers up to the next linear one


class PowerState(NamedTuple):
  """Right singular vector estimates (unit norm, layer input shape) per layer,
  and the number of updates made."""
  v: dict[str, jax.Array]
  count: jax.Array


def _constant(L: models.Layer, shape) -> float:
  """A parameter-free layer's Lipschitz bound (Table 5's analytic rows)."""
  if L.kind in lipschitz.ACTIVATION_BOUNDS:
    return lipschitz.ACTIVATION_BOUNDS[L.kind]
  if L.kind == "maxpool":
    return lipschitz.maxpool_bound(L.kernel, L.stride, shape[:2], L.padding)
  if L.kind == "lrn":
    return lipschitz.lrn_bound(*L.lrn)
  if L.kind in ("flatten", "dropout"):  # identity at evaluation
    return 1.0
  raise ValueError(f"layer {L.name!r}: no Lipschitz bound for kind {L.kind!r}.")


def operators(model: models.Model) -> tuple[Operator, ...]:
  """The model's linear layers with the constants that follow them (§4.3).

  Constants before the first linear layer fold into its factor, so the
  product of σ_k · factor_k is `lipschitz.layer_bounds`'s product.
  """
  pshape = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  x = jax.ShapeDtypeStruct((1,) + model.input_shape, jnp.float32)
  shape, ops, lead = tuple(model.input_shape), [], 1.0
  for L in model.layers:
    if L.kind in ("dense", "conv"):
      ops.append(Operator(L.name, L.kind, shape, tuple(pshape[L.name]["kernel"].shape),
                          L.stride, L.padding, lead if not ops else 1.0))
    elif ops:
      ops[-1] = ops[-1]._replace(factor=ops[-1].factor * _constant(L, shape))
    else:
      lead *= _constant(L, shape)
    shape = tuple(jax.eval_shape(
        lambda p, v, n=L.name: model.features(p, v, n), pshape, x).shape[1:])
  if not ops:
    raise ValueError(f"model {model.name} has no dense or conv layer to bound.")
  return tuple(ops)


def kernel_matrix_bound(op: Operator) -> Operator:
  """LMT's conv bound (its authors' `Convolution2D`): ‖conv‖₂ ≤ √n·‖W‖₂, W the
  kernel as a (kh·kw·c_in, c_out) matrix and n = ⌈min(kh, H_padded − kh + 1)/sh⌉ ×
  ⌈min(kw, W_padded − kw + 1)/sw⌉, the most windows one input element lies in
  (‖conv v‖² = Σ_windows ‖W patch‖² ≤ ‖W‖²·n·‖v‖²). Looser than the operator
  norm; the op is returned as a 'matrix' operator (a dense layer unchanged)."""
  if op.kind != "conv":
    return op
  kh, kw, cin, _ = op.kernel_shape
  sh, sw = (op.stride, op.stride) if isinstance(op.stride, int) else tuple(op.stride)
  pads = (jax.lax.padtype_to_pads(op.input_shape[:2], (kh, kw), (sh, sw), op.padding)
          if isinstance(op.padding, str) else op.padding)
  hp, wp = (op.input_shape[i] + sum(pads[i]) for i in (0, 1))
  n = math.ceil(min(kh, hp - kh + 1) / sh) * math.ceil(min(kw, wp - kw + 1) / sw)
  return op._replace(kind="matrix", input_shape=(kh * kw * cin,),
                     factor=op.factor * math.sqrt(n))


def _forward(op: Operator, W, v):
  """A v: the layer's linear map (no bias) on one input v."""
  if op.kind == "dense":
    return v @ W
  if op.kind == "matrix":  # a conv kernel as its (kh·kw·c_in, c_out) matrix
    return v @ W.reshape(-1, W.shape[-1])
  f = spectral.conv_fn(np.zeros(op.kernel_shape, np.float32), op.stride, op.padding,
                       input_hw=op.input_shape[:2])
  return f(v, kernel=W)


def _adjoint(op: Operator, W, u):
  """Aᵀ u, by transposing the linear map (the conv's is a transposed conv)."""
  if op.kind == "dense":
    return W @ u
  if op.kind == "matrix":
    return W.reshape(-1, W.shape[-1]) @ u
  spec = jax.ShapeDtypeStruct(op.input_shape, u.dtype)
  return jax.linear_transpose(lambda v: _forward(op, W, v), spec)(u)[0]


def _unit(x, fallback=None):
  """x / ‖x‖; where x = 0 (a zero kernel maps every v to 0), `fallback` (the
  previous vector, so the iteration restarts from it once the kernel moves)."""
  n = optax.safe_norm(x.ravel(), 0.0)
  unit = x / jnp.where(n > 0, n, 1.0)
  return unit if fallback is None else jnp.where(n > 0, unit, fallback)


def init(ops: tuple[Operator, ...], seed: int = 0) -> PowerState:
  """Random unit start vectors, one per linear layer (the restore template)."""
  keys = jax.random.split(jax.random.PRNGKey(seed), len(ops))
  return PowerState({op.name: _unit(jax.random.normal(k, op.input_shape))
                     for op, k in zip(ops, keys)}, jnp.int32(0))


def update(ops: tuple[Operator, ...], params, state: PowerState, iters: int = 1):
  """`iters` power iterations v ← AᵀA v / ‖·‖ per layer, then σ_k = ‖A_k v‖.

  Returns (sigmas, state): sigmas (K,) in `ops` order, differentiable in the
  kernels (the vectors are constants: the gradient of σ_k is u vᵀ, the
  spectral norm's where σ_k is simple); state holds the new vectors.
  """
  sig, vs = [], {}
  for op in ops:
    W = params[op.name]["kernel"]
    Wc = jax.lax.stop_gradient(W)
    v = jax.lax.stop_gradient(state.v[op.name])
    it = lambda _, v, op=op, Wc=Wc: _unit(_adjoint(op, Wc, _forward(op, Wc, v)), v)
    # Unrolled for the few per-step iterations (XLA:CPU runs convs in a while
    # loop far slower, see train._epoch_fn); a loop for many (compile time).
    v = (jax.lax.fori_loop(0, iters, it, v) if iters > 4 else
         functools.reduce(lambda v, i: it(i, v), range(iters), v))
    v = jax.lax.stop_gradient(v)
    vs[op.name] = v
    # safe_norm: σ = 0 with a zero (not NaN) gradient at a zero kernel.
    sig.append(optax.safe_norm(_forward(op, W, v).ravel(), 0.0))
  return jnp.stack(sig), PowerState(vs, state.count + 1)


def layer_bounds(ops: tuple[Operator, ...], sigmas) -> jax.Array:
  """L_k = σ_k × the constants after layer k (¼ per sigmoid): (K,)."""
  return sigmas * jnp.asarray([op.factor for op in ops], sigmas.dtype)


def penalty(cfg: RegConfig, bounds) -> jax.Array:
  """λ Σ L_k ('sum', §4.3's suggestion) or λ Σ log L_k ('log': the product)."""
  if cfg.penalty == "none":
    return jnp.float32(0)
  if cfg.penalty == "sum":
    return cfg.strength * jnp.sum(bounds)
  if cfg.penalty == "log":
    # log 0 = −∞: a zero layer's bound is floored (its gradient is then 0).
    return cfg.strength * jnp.sum(jnp.log(jnp.maximum(bounds, LOG_FLOOR)))
  raise ValueError(f"penalty {cfg.penalty!r}: use one of {PENALTIES}.")


def lmt_logits(logits, y, lipschitz_constant, eps: float):
  """LMT's training logits: every non-true logit + √2·L·ε (Tsuzuku et al. 2018).

  z_l − z_j changes by at most √2·L·‖r‖ under ‖r‖ ≤ ε, so a margin left after
  the shift certifies ε (the 'lipschitz' certificate, loose form).
  """
  shift = math.sqrt(2.0) * lipschitz_constant * eps
  return logits + shift * (1.0 - jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype))


def check(cfg: RegConfig) -> RegConfig:
  """`cfg` if it is valid, else a ValueError naming the field."""
  if cfg.penalty not in PENALTIES:
    raise ValueError(f"penalty {cfg.penalty!r}: use one of {PENALTIES}.")
  if cfg.strength < 0 or cfg.lmt_eps < 0:
    raise ValueError(f"strength and lmt_eps must be >= 0: {cfg}.")
  if cfg.iters < 1 or cfg.refresh_iters < 0:
    raise ValueError(f"need iters >= 1 and refresh_iters >= 0: {cfg}.")
  return cfg


def objective(model: models.Model, ops, cfg: RegConfig, params, state: PowerState,
              x, y, rng=None):
  """A minibatch's whole loss with the bounds in it, and the advanced state.

  Mean cross-entropy (of LMT's shifted logits when lmt_eps > 0) + the
  model's weight decay (§4.2) + `penalty` of the current bounds (§4.3).
  """
  sig, state = update(ops, params, state, cfg.iters)
  bounds = layer_bounds(ops, sig)
  logits = model.apply(params, x, train=rng is not None, rng=rng)
  if cfg.lmt_eps:
    logits = lmt_logits(logits, y, jnp.prod(bounds), cfg.lmt_eps)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return ce + model.weight_penalty(params) + penalty(cfg, bounds), state


def stepping_hook() -> bool:
  """Whether `train.ExtraLoss` carries a state from step to step (its `step`
  field): then the vectors advance every step and LMT can shift the logits."""
  return "step" in train.ExtraLoss._fields


def extra_loss(model: models.Model, cfg: RegConfig) -> train.ExtraLoss:
  """The bounds' terms as a `train.ExtraLoss` (state: `PowerState`, checkpointed).

  Every epoch starts with `refresh_iters` iterations on the current weights;
  every step runs `iters` more. With the stepping hook those persist from step
  to step; without it each step starts from the epoch's vectors (the epoch's
  refresh keeps them converged) and LMT, which needs the minibatch's labels,
  is refused.
  """
  check(cfg)
  ops = operators(model)
  advance = jax.jit(lambda p, s: update(ops, p, s, cfg.refresh_iters)[1])

  def refresh(epoch, params, state):
    del epoch  # a function of the weights and vectors only: resumes exactly
    return advance(params, state) if cfg.refresh_iters else state

  def start(params):
    del params  # the shapes come from the model
    return init(ops, cfg.seed)

  if stepping_hook():
    def step(params, state, x, y, key, rng):
      del key
      return objective(model, ops, cfg, params, state, x, y, rng)
    return train.ExtraLoss(start, refresh, lambda *a: jnp.float32(0), step=step)
  if cfg.lmt_eps:
    raise ValueError("LMT shifts the minibatch's logits: it needs train.ExtraLoss's "
                     "`step` field (the stepping hook), which this train.py lacks.")

  def loss(params, state, key, rng):
    del key, rng
    return penalty(cfg, layer_bounds(ops, update(ops, params, state, cfg.iters)[0]))
  return train.ExtraLoss(start, refresh, loss)


def bounds_of(model: models.Model, params, state: PowerState | None = None,
              iters: int = 100, seed: int = 0) -> np.ndarray:
  """The L_k of trained weights by `iters` iterations (from `state`'s vectors
  when given): a quick look, not Table 5's certified bounds."""
  ops = operators(model)
  state = init(ops, seed) if state is None else state
  sig, _ = jax.jit(lambda p, s: update(ops, p, s, iters))(params, state)
  return np.asarray(layer_bounds(ops, sig))
