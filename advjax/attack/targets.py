"""Which labels the §4.1 attack aims at: random targets, untargeted strategies.

* `random_targets`: a uniformly random wrong label (the paper's protocol).
* `untargeted`: the labels an untargeted mode moves away from or towards
  ('logits': the runner-up; 'random': a random wrong label).
* `screen`: the labels nearest to x by DeepFool's linearised distance (the
  untargeted 'all' attack with joint=False, and the first-order pass's aim).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from advjax import adapt

MODES = ("all", "logits", "random")


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
def screen(apply, K: int, n: int, params, x, label):
  """(B, n) labels ≠ label nearest to x by the linearised distance (DeepFool's).

  d_k = (z_label − z_k) / ‖∇(z_label − z_k)‖ at x; gradients are taken for the
  4n highest other logits only, so a model of 1,000 classes costs 4n passes.
  """
  m = min(K - 1, 4 * n)
  def one(xi, li):
    z = apply(params, xi)
    cand = jax.lax.top_k(jnp.where(jnp.arange(K) == li, -jnp.inf, z), m)[1]
    gap = lambda v, k: (lambda o: o[li] - o[k])(apply(params, v))
    g = jax.vmap(jax.grad(gap), in_axes=(None, 0))(xi, cand)
    d = (z[li] - z[cand]) / jnp.maximum(
        jnp.sqrt(jnp.sum(g.reshape(m, -1) ** 2, -1)), 1e-30)
    return cand[jnp.argsort(d)[:n]].astype(jnp.int32)
  return jax.vmap(one)(x, label)
