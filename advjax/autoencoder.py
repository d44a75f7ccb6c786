"""Sparse autoencoder pretraining of AE400-10 (Szegedy et al. §4.2).

AE400-10 is a softmax on the 400-unit code of a sparse sigmoid autoencoder;
the paper does not fine-tune the encoder, so the classifier trains with the
code layer frozen (`TrainConfig.frozen=('code',)`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from advjax import data as data_lib
from advjax.train import TrainConfig


class AEResult(NamedTuple):
  """The autoencoder's encoder ('code' layer params), decoder and epoch losses."""
  encoder: dict
  decoder: dict
  losses: list[float]


def _ae_loss(p, x, lam: float, rho: float, beta: float) -> jax.Array:
  """Sparse autoencoder loss: BCE reconstruction + β·KL(ρ‖ρ̂) + λ·Σ W²."""
  x = x.reshape(len(x), -1)
  h = jax.nn.sigmoid(x @ p["enc"]["kernel"] + p["enc"]["bias"])
  z = h @ p["dec"]["kernel"] + p["dec"]["bias"]
  rec = optax.sigmoid_binary_cross_entropy(z, x).sum(-1).mean()
  q = jnp.clip(h.mean(0), 1e-6, 1 - 1e-6)
  kl = jnp.sum(rho * jnp.log(rho / q) + (1 - rho) * jnp.log((1 - rho) / (1 - q)))
  decay = lam * (jnp.sum(p["enc"]["kernel"] ** 2) + jnp.sum(p["dec"]["kernel"] ** 2))
  return rec + beta * kl + decay


def pretrain(ds: data_lib.Dataset, cfg: TrainConfig,
                         hidden: int = 400, lam: float = 1e-6, rho: float = 0.05,
                         beta: float = 1.0, progress: bool = True) -> AEResult:
  """Trains the sparse sigmoid autoencoder of AE400-10 (§4.2).

  The paper does not fine-tune it: the classifier trains a softmax on the code
  with the encoder frozen (`TrainConfig.frozen=('code',)`).
  """
  m = int(np.prod(ds.x.shape[1:]))
  k1, k2 = jax.random.split(jax.random.PRNGKey(cfg.seed))
  init = jax.nn.initializers.glorot_uniform()
  p = {"enc": {"kernel": init(k1, (m, hidden)), "bias": jnp.zeros(hidden)},
       "dec": {"kernel": init(k2, (hidden, m)), "bias": jnp.zeros(m)}}
  opt = optax.adam(cfg.lr)
  steps = len(ds.x) // cfg.batch_size
  x_all = jnp.asarray(ds.x)

  @jax.jit
  def epoch(p, s, key):
    order = jax.random.permutation(key, len(x_all))[: steps * cfg.batch_size]
    def step(c, idx):
      l, g = jax.value_and_grad(_ae_loss)(c[0], x_all[idx], lam, rho, beta)
      u, s2 = opt.update(g, c[1], c[0])
      return (optax.apply_updates(c[0], u), s2), l
    (p, s), ls = jax.lax.scan(step, (p, s), order.reshape(steps, -1))
    return p, s, ls.mean()

  s, losses = opt.init(p), []
  for e in tqdm(range(cfg.epochs), disable=not progress, desc="autoencoder"):
    p, s, l = epoch(p, s, jax.random.fold_in(jax.random.PRNGKey(cfg.seed), e))
    losses.append(float(l))
  return AEResult(p["enc"], p["dec"], losses)
