"""Which labels the §4.1 attack aims at: random targets, untargeted strategies.

* `random_targets`: a uniformly random wrong label (the paper's protocol).
* `untargeted`: the labels an untargeted mode moves away from or towards
  ('logits': the runner-up; 'random': a random wrong label).
* `screen`: the labels nearest to x by DeepFool's linearised distance, taken
  inside the box (the untargeted 'all' attack with joint=False, and the
  first-order pass's aim).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from advjax import adapt

MODES = ("all", "logits", "random")
# The screen takes gradients of the 4n highest other logits, at least this many:
# every label of a 10-class model (on FC10(1e-4) the nearest label inside the
# box lay outside the top 4 logits; 18 passes instead of 8 of ~390).
SCREEN_MIN = 9


def random_targets(key: jax.Array, labels, num_classes: int) -> jax.Array:
  """A uniformly random label ≠ labels[i] per example (the paper's protocol)."""
  labels = jnp.asarray(labels, jnp.int32)
  off = jax.random.randint(key, labels.shape, 1, num_classes)
  return (labels + off) % num_classes


def check_mode(untargeted: str, key) -> None:
  """Raises for an unknown untargeted mode or 'random' without a key."""
  if untargeted not in MODES:
    raise ValueError(f"untargeted={untargeted!r}; choose 'all', 'logits' or 'random'.")
  if untargeted == "random" and key is None:
    raise ValueError("untargeted='random' needs a PRNG key: pass key=jax.random.PRNGKey(0).")


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def untargeted(apply, K: int, mode: str, params, x, label, key):
  """(label, target) of an untargeted mode; label defaults to the prediction."""
  logits = adapt.batched(apply)(params, x)
  label = jnp.argmax(logits, -1).astype(jnp.int32) if label is None else label
  if mode == "random":
    return label, random_targets(key, label, K)
  masked = jnp.where(jax.nn.one_hot(label, K, dtype=bool), -jnp.inf, logits)
  return label, jnp.argmax(masked, -1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(1, 2))
def shift(label, k: int, K: int):
  """The k-th label after `label`, cyclically (every other label in turn)."""
  return ((label + k) % K).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def screen(apply, K: int, n: int, params, x, label, lo, hi):
  """(B, n) labels ≠ label nearest to x by the linearised distance inside the box.

  DeepFool's distance d_k = (z_label − z_k) / ‖∇(z_label − z_k)‖ at x ignores
  the box; on MNIST most pixels sit on it, so d_k here is the linearised
  problem's distance inside the box (`box_distance`): exact on affine models,
  where it names the nearest label of the exact minimum. Gradients are taken
  for the 4n highest other logits only, so a model of 1,000 classes costs 4n
  passes (at least SCREEN_MIN). lo, hi: the box, scalars, flat (n,) or per
  example (B, n).
  """
  m = screened(K, n)
  B = x.shape[0]
  n_in = math.prod(x.shape[1:])
  lo, hi = (jnp.broadcast_to(jnp.asarray(b, x.dtype), (B, n_in)) for b in (lo, hi))
  def one(xi, li, loi, hii):
    z = apply(params, xi)
    cand = jax.lax.top_k(jnp.where(jnp.arange(K) == li, -jnp.inf, z), m)[1]
    gap = lambda v, k: (lambda o: o[li] - o[k])(apply(params, v))
    g = jax.vmap(jax.grad(gap), in_axes=(None, 0))(xi, cand).reshape(m, -1)
    xf = xi.reshape(-1)
    d = box_distance(-g, z[li] - z[cand], loi - xf, hii - xf)
    return cand[jnp.argsort(d)[:n]].astype(jnp.int32)
  return jax.vmap(one)(x, label, lo, hi)


def box_distance(g: jax.Array, delta: jax.Array, lo: jax.Array, hi: jax.Array,
                 steps: int = 16) -> jax.Array:
  """Per row of g (m, n): min ‖r‖₂ s.t. g·r ≥ delta and lo ≤ r ≤ hi (lo ≤ 0 ≤ hi);
  inf where the box cannot reach delta, 0 where delta ≤ 0.

  By the KKT conditions the minimiser is r(λ) = clip(λg, lo, hi) for the
  multiplier λ ≥ 0 at which g·r(λ) = delta (CERTIFY.md's 1-D form); g·r(λ)
  grows with λ, so log λ is bisected between log(delta/‖g‖²) (below it the
  unclipped step falls short) and the log λ at which every coordinate is
  clipped, and the distance is taken at the reaching end. In log space λ stays
  finite where some g_i ≈ 0 (λ·0, never ∞·0); bisection, not a sort of the
  saturation points, because XLA:CPU sorts slowly (a sort made the untargeted
  attack on the benchmark's MLP 2.9× slower). 16 steps pin log λ to ~1e-3: enough to rank.
  """
  tiny = jnp.finfo(g.dtype).tiny
  reach = lambda t: jnp.sum(g * jnp.clip(jnp.exp(t)[:, None] * g, lo, hi), -1)
  a = jnp.log(jnp.maximum(delta, tiny)) - jnp.log(jnp.maximum(jnp.sum(g * g, -1), tiny))
  room = jnp.maximum(hi, -lo)
  cap = jnp.where(jnp.abs(g) > tiny, jnp.log(jnp.maximum(room, tiny))
                  - jnp.log(jnp.maximum(jnp.abs(g), tiny)), -jnp.inf)
  b = jnp.maximum(cap.max(-1), a)
  feasible = reach(b) >= delta
  def bisect(_, ab):
    a, b = ab
    mid = 0.5 * (a + b)
    ok = reach(mid) >= delta
    return jnp.where(ok, a, mid), jnp.where(ok, mid, b)
  _, b = jax.lax.fori_loop(0, steps, bisect, (a, b))
  r = jnp.clip(jnp.exp(b)[:, None] * g, lo, hi)
  dist = jnp.sqrt(jnp.sum(r * r, -1))
  return jnp.where(delta <= 0, 0.0, jnp.where(feasible, dist, jnp.inf))


def screened(K: int, n: int) -> int:
  """The labels whose gradients `screen` takes to pick n of K − 1."""
  return min(K - 1, max(4 * n, SCREEN_MIN))
