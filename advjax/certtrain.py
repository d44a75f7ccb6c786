"""Certified-training recipes as published: ε schedules, LMT's clipped margin,
GloRo's bottom logit (issue 29; the paper's §4.3 suggestion carried to the
literature that followed it).

Each piece is a pure function of logits and Lipschitz bounds, so it composes
with `advjax.regularise` (whose persistent power iteration gives the per-layer
bounds every step) and the existing training loop:

  * `Schedule`: ε ramped, never full from the start. BCP: one clean epoch,
    then linear from 0 to ε over 20 epochs while the clean loss's weight
    falls from 1 to 0; CAP: linear from 0.01·ε; GloRo: its '-log-' ramp from
    0.01·ε to 1.1·ε over the first half of training, then held (trained above
    ε, evaluated at ε). At the full ε from the first step, training stalls at
    a constant classifier.
  * `lmt_logits`: LMT (Tsuzuku et al. 2018, the authors' code): every
    non-true logit + √2·c·L·ε, scaled per example by
    clip(margin / (√2·c·L), 0, 1) (a stop-gradient factor), so a
    misclassified point gets no Lipschitz penalty.
  * `gloro_logits`: GloRo (Leino et al. 2021): with j the *predicted* class, an
    extra "bottom" logit max_{i≠j}(z_i + ε·K_ji), K_ji = (the bound of the
    layers below the last) · ‖w_j − w_i‖₂; the cross-entropy on the K + 1
    logits (`gloro_loss`), or its TRADES form: CE on the K logits plus
    λ·KL(softmax(z) ‖ softmax(z, z_⊥)).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from advjax import criteria

SCHEDULES = ("constant", "linear", "exp", "log")


class Schedule(NamedTuple):
  """ε and the clean loss's weight as functions of the epoch (fractional:
  epoch + step / steps per epoch).

  Attributes:
    kind: 'constant' (`overshoot`·ε throughout); from start·ε at `begin` to
      overshoot·ε at `end`, then held: 'linear'; 'exp' (geometric); 'log'
      (GloRo's `-log-`, `gloro/training/schedules.py`: ε_t = log((e^hi − e^lo)·t
      + e^lo) with lo, hi in ε's units, so concave: half way it is already ~70%
      of hi at ε = 1.58).
    begin, end: epochs where the ramp starts and reaches its top.
    start: the multiplier of ε at `begin` (BCP 0, CAP 0.01, GloRo 0.01).
    overshoot: the top (GloRo trains at 1.1·ε).
    clean_fade: the clean loss's weight falls 1 → 0 over the ramp (BCP).
  """
  kind: str = "constant"
  begin: float = 0.0
  end: float = 0.0
  start: float = 0.0
  overshoot: float = 1.0
  clean_fade: bool = False

  def check(self) -> "Schedule":
    if self.kind not in SCHEDULES:
      raise ValueError(f"schedule kind {self.kind!r}: use one of {SCHEDULES}.")
    if not 0 <= self.begin <= self.end or self.start < 0 or self.overshoot <= 0:
      raise ValueError(f"need 0 <= begin <= end, start >= 0, overshoot > 0: {self}.")
    if self.kind == "exp" and self.start <= 0:
      raise ValueError("an 'exp' (geometric) ramp needs start > 0.")
    return self

  def progress(self, epoch):
    """0 before `begin`, 1 from `end` on, linear between."""
    span = max(self.end - self.begin, 1e-12)
    return jnp.clip((jnp.asarray(epoch, jnp.float32) - self.begin) / span, 0.0, 1.0)

  def eps_at(self, epoch, eps):
    """The training radius at `epoch` for the radius `eps` evaluated at."""
    hi = jnp.float32(self.overshoot * eps)
    if self.kind == "constant":
      return hi
    t, lo = self.progress(epoch), jnp.float32(self.start * eps)
    if self.kind == "linear":
      return lo + t * (hi - lo)
    if self.kind == "exp":
      return lo * (hi / lo) ** t
    return jnp.log((jnp.exp(hi) - jnp.exp(lo)) * t + jnp.exp(lo))

  def clean_weight(self, epoch):
    """The clean cross-entropy's weight (1, or fading to 0 over the ramp)."""
    return 1.0 - self.progress(epoch) if self.clean_fade else jnp.float32(1.0)


BCP = Schedule("linear", begin=1, end=21, start=0.0, clean_fade=True)
CAP = Schedule("linear", begin=0, end=20, start=0.01)


def gloro_schedule(epochs: int) -> Schedule:
  """GloRo's '[0.01]-log-[50%:1.1]': its log ramp from 0.01·ε to 1.1·ε over the
  first half of the epochs, then held."""
  return Schedule("log", begin=0, end=epochs / 2, start=0.01, overshoot=1.1)


def lmt_logits(logits, y, lipschitz_constant, eps, c: float = 1.0):
  """LMT's training logits as its authors' code makes them (module doc)."""
  scale = math.sqrt(2.0) * c * lipschitz_constant
  clip = jnp.clip(jax.lax.stop_gradient(criteria.lead(logits, y) / scale), 0.0, 1.0)
  shift = (scale * eps) * clip[:, None]
  return logits + shift * (1.0 - jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype))


def lmt_pairwise_logits(logits, y, below, kernel, eps, c: float = 1.0):
  """LMT++ as its authors' code makes it (`LmtFc`): non-true logit i gets
  + l_i·f, l_i = c·ε·K_yi (the pairwise bound, `pairwise_k`), f per example the
  minimum over i of clip((z_y − z_i)/l_i, 0, 1) (0 when misclassified), under
  stop-gradient as in `lmt_logits`."""
  l = (c * eps) * pairwise_k(below, kernel)[y]  # (B, K); 0 at i = y
  m = jnp.take_along_axis(logits, y[:, None], 1) - logits  # z_y − z_i
  f = jnp.where(m >= 0, jnp.where(m >= l, 1.0, m / jnp.where(l > 0, l, 1.0)), 0.0)
  f = jax.lax.stop_gradient(jnp.min(f, 1))
  return logits + f[:, None] * l


def pairwise_k(below, kernel):
  """K (K, K): K_ji = below · ‖w_j − w_i‖₂ for the last layer's kernel (n, K)."""
  d = kernel.T[:, None, :] - kernel.T[None, :, :]
  return below * optax.safe_norm(d, 0.0, axis=-1)


def gloro_logits(logits, below, kernel, eps):
  """(B, K + 1): the logits and GloRo's bottom logit for the predicted class."""
  K = pairwise_k(below, kernel)
  j = jnp.argmax(logits, 1)
  kj = K[j]  # (B, K): K_ji
  bottom = jnp.max(jnp.where(jax.nn.one_hot(j, logits.shape[1], dtype=bool), -jnp.inf,
                             logits + eps * kj), 1)
  return jnp.concatenate([logits, bottom[:, None]], 1)


def gloro_loss(logits, y, below, kernel, eps, trades: float = 0.0):
  """Mean GloRo loss: CE on the K + 1 logits, or (trades = λ > 0) CE on the K
  logits + λ·KL(softmax(z) padded with 0 for ⊥ ‖ softmax(z, z_⊥))."""
  ext = gloro_logits(logits, below, kernel, eps)
  if not trades:
    return optax.softmax_cross_entropy_with_integer_labels(ext, y).mean()
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  p = jax.nn.softmax(logits, -1)
  log_q = jax.nn.log_softmax(ext, -1)[:, :-1]
  kl = jnp.sum(p * (jax.nn.log_softmax(logits, -1) - log_q), -1)
  return (ce + trades * kl).mean()


RECIPES = ("lmt", "lmt++", "gloro", "gloro-trades")
CONV_BOUNDS = ("operator", "lmt")


class Recipe(NamedTuple):
  """A certified-training recipe for `train.train` (hashable; `extra_loss`).

  Attributes:
    kind: 'lmt', 'lmt++' (the pairwise last layer), 'gloro' or 'gloro-trades'.
    eps: the L2 radius trained for (evaluated at; the schedule may overshoot).
    schedule: how ε is ramped (`Schedule`; BCP, CAP, `gloro_schedule`).
    c: LMT's constant c.
    trades: λ of the TRADES form ('gloro-trades').
    iters, refresh_iters, seed: the power iteration's (`advjax.regularise`).
    conv_bound: a conv layer's bound in the loss: 'operator' (its operator
      norm) or 'lmt' (LMT's code: √n·‖kernel matrix‖₂, `kernel_matrix_bound`).
  """
  kind: str = "gloro"
  eps: float = 1.58
  schedule: Schedule = Schedule()
  c: float = 1.0
  trades: float = 1.0
  iters: int = 1
  refresh_iters: int = 10
  seed: int = 0
  conv_bound: str = "operator"

  def check(self) -> "Recipe":
    if self.kind not in RECIPES:
      raise ValueError(f"recipe kind {self.kind!r}: use one of {RECIPES}.")
    if self.conv_bound not in CONV_BOUNDS:
      raise ValueError(f"conv_bound {self.conv_bound!r}: use one of {CONV_BOUNDS}.")
    if not self.eps > 0 or self.iters < 1 or self.refresh_iters < 0:
      raise ValueError(f"need eps > 0, iters >= 1, refresh_iters >= 0: {self}.")
    self.schedule.check()
    return self


class RecipeState(NamedTuple):
  """The power iteration's vectors and the epoch the schedule reads."""
  power: object
  epoch: jax.Array


def robust_loss(recipe: Recipe, logits, y, bounds, kernel, eps):
  """The recipe's loss on a minibatch at radius eps, from the layer bounds."""
  if recipe.kind in ("lmt", "lmt++"):
    z = (lmt_logits(logits, y, jnp.prod(bounds), eps, recipe.c) if recipe.kind == "lmt"
         else lmt_pairwise_logits(logits, y, jnp.prod(bounds[:-1]), kernel, eps, recipe.c))
    return optax.softmax_cross_entropy_with_integer_labels(z, y).mean()
  trades = recipe.trades if recipe.kind == "gloro-trades" else 0.0
  return gloro_loss(logits, y, jnp.prod(bounds[:-1]), kernel, eps, trades)


def extra_loss(model, recipe: Recipe):
  """The recipe as a `train.ExtraLoss` (its state checkpointed per epoch)."""
  from advjax import train  # pylint: disable=import-outside-toplevel
  from advjax.norms import regulariser as regularise  # pylint: disable=import-outside-toplevel
  recipe.check()
  ops = regularise.operators(model)
  if recipe.conv_bound == "lmt":
    ops = tuple(map(regularise.kernel_matrix_bound, ops))
  last = ops[-1].name
  advance = jax.jit(lambda p, s: regularise.update(ops, p, s, recipe.refresh_iters)[1])

  def start(params):
    del params
    return RecipeState(regularise.init(ops, recipe.seed), jnp.float32(0))

  def refresh(epoch, params, state):
    power = advance(params, state.power) if recipe.refresh_iters else state.power
    return RecipeState(power, jnp.float32(epoch))

  def step(params, state, x, y, key, rng):
    del key
    sig, power = regularise.update(ops, params, state.power, recipe.iters)
    bounds = regularise.layer_bounds(ops, sig)
    logits = model.apply(params, x, train=rng is not None, rng=rng)
    eps = recipe.schedule.eps_at(state.epoch, recipe.eps)
    w = recipe.schedule.clean_weight(state.epoch)
    clean = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    rob = robust_loss(recipe, logits, y, bounds, params[last]["kernel"], eps)
    loss = w * clean + (1 - w) * rob if recipe.schedule.clean_fade else rob
    return loss + model.weight_penalty(params), RecipeState(power, state.epoch)

  return train.ExtraLoss(start, refresh, lambda *a: jnp.float32(0), step=step)
