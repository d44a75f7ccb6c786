"""The global Lipschitz margin bound from §4.3's per-layer norms.

With margins m_j = z_l − z_j at x, z_l − z_j changes by at most L_j·‖r‖ with
L_j = ‖w_l − w_j‖₂ · Π_k ‖W_k‖ · ¼^(#sigmoids): the last layer's row
difference times the certified Table 5 bounds of every layer below it
(`advjax.lipschitz.layer_bounds`: certified operator norms of dense and conv
layers, ¼ per sigmoid, 1 per ReLU, the window count for max-pooling). So no
r with ‖r‖ < min_j m_j / L_j changes the label; the box is not used. This
needs the model's layer list: an `advjax.models.Model` passed as the pair
(model.apply, params).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Constants(NamedTuple):
  """product: Π of the certified bounds below the last layer (rounded up);
  kernel: the last (dense) layer's kernel (n, K)."""
  product: jax.Array
  kernel: jax.Array


def _model(apply):
  """The `advjax.models.Model` behind a wrapped apply, or None."""
  from advjax import models  # pylint: disable=import-outside-toplevel
  m = getattr(getattr(apply, "fn", None), "__self__", None)
  return m if isinstance(m, models.Model) else None


def constants(apply, params) -> Constants:
  """The layer bounds of an advjax Model (host, float64); raises otherwise."""
  from advjax import lipschitz  # pylint: disable=import-outside-toplevel
  model = _model(apply)
  if model is None:
    raise ValueError(
        "method='lipschitz' needs the layer list of an advjax.models.Model, passed "
        "as (model.apply, params); for other models use 'crown', 'alpha-crown' "
        "or 'ibp' (or 'exact' for affine ones).")
  rows = lipschitz.layer_bounds(model, params).rows
  last = rows[-1]
  if last.kind != "dense":
    raise ValueError(f"method='lipschitz': the last layer {last.name!r} is "
                     f"{last.kind!r}, not dense.")
  bad = [r.name for r in rows[:-1] if not r.certified]
  if bad:
    raise ValueError(f"method='lipschitz': no certified bound for layers {bad}.")
  prod = math.prod(float(r.bound) for r in rows[:-1]) * (1 + 1e-9)  # round up
  kernel = np.asarray(params[last.name]["kernel"])
  return Constants(np.float64(prod), kernel)


def radius(lip: Constants, m, label, eps_box, tol: float):
  """(radius, margin bound there) of one example from its margins m (K,),
  already rounded down; +inf at the label."""
  W = jnp.asarray(lip.kernel, m.dtype)
  diff = W[:, label][:, None] - W
  L = jnp.sqrt(jnp.sum(diff * diff, 0)) * (1 + tol) * jnp.asarray(lip.product, m.dtype)
  is_l = jnp.arange(m.shape[0]) == label
  r = jnp.where(is_l | (L <= 0), jnp.inf, jnp.maximum(m, 0.0) / jnp.where(L > 0, L, 1.0))
  r = jnp.minimum(jnp.min(r) * (1 - tol), eps_box)
  low = jnp.where(is_l, jnp.inf, m - L * r)
  return r, jnp.min(low)
