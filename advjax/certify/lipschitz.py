"""The global Lipschitz margin bound from §4.3's per-layer norms.

With margins m_j = z_l − z_j at x, z_l − z_j changes by at most L_j·‖r‖ with
L_j = ‖w_l − w_j‖₂ · Π_k ‖W_k‖ · ¼^(#sigmoids): the last layer's row
difference times the certified Table 5 bounds of every layer below it
(`advjax.norms.layers.layer_bounds`: certified operator norms of dense and conv
layers, ¼ per sigmoid, 1 per ReLU, the window count for max-pooling). So no
r with ‖r‖ < min_j m_j / L_j changes the label; the box is not used. This
needs the model's layer list: an `advjax.models.Model` passed as the pair
(model.apply, params).
"""

from __future__ import annotations

import collections
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Constants(NamedTuple):
  """product: Π of the certified bounds below the last layer (rounded up);
  kernel: the last (dense) layer's kernel (n, K); norms: layer name -> the
  certified operator-norm bound of each dense and conv layer (rounded up)."""
  product: jax.Array
  kernel: jax.Array
  norms: dict


def _model(apply):
  """The `advjax.models.Model` behind a wrapped apply, or None."""
  from advjax import models  # pylint: disable=import-outside-toplevel
  m = getattr(getattr(apply, "fn", None), "__self__", None)
  return m if isinstance(m, models.Model) else None


def constants(apply, params) -> Constants:
  """The layer bounds of an advjax Model (host, float64); raises otherwise."""
  from advjax.norms import layers as lipschitz  # pylint: disable=import-outside-toplevel
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
  norms = {r.name: np.float64(float(r.bound) * (1 + 1e-9)) for r in rows
           if r.kind in ("dense", "conv")}
  return Constants(np.float64(prod), kernel, norms)


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


_PRODUCTS = ("dot_general", "conv_general_dilated")  # a layer's kernel times x
_SAME_NORM = frozenset({"reshape", "transpose", "squeeze", "expand_dims",
                        "convert_element_type", "rev", "copy", "copy_p", "neg"})


def unit_bounds(g, plan, env, params, norms: dict, dtype) -> dict:
  """Per-unit Lipschitz bounds of the graph's variables from the layer norms.

  U_v (shaped like v) with |v_u(x + r) − v_u(x)| ≤ U_v,u·‖r‖₂ for every r,
  carried with G_v, ‖v(x + r) − v(x)‖₂ ≤ G_v·‖r‖₂, from x (U = 1, G = 1):
  a dense or conv node whose kernel is a layer of `norms` (and feeds no other
  product) gives U_u = ‖row u‖₂·G and G·‖W‖ (the certified bound); a bias add
  keeps both; one-to-one reshapes move U (a broadcast also multiplies G by
  √copies); sigmoid scales both by ¼, ReLU and tanh by 1; max-pooling takes
  U's max over each window and G·√(windows per element). Variables past any
  other node (a sum of two x-dependent terms, a product with a constant
  that is not a layer's kernel, ...) get no bound. With it, a pre-activation's
  interval at radius ε is cut to its clean value ± ε·U: through deep or wide
  layers, where intervals compound, this is §4.3's bound applied per unit.
  """
  from advjax.certify import rules  # pylint: disable=import-outside-toplevel
  from advjax.certify.interpret import as_dtype, bind, read  # pylint: disable=import-outside-toplevel
  paths = jax.tree_util.tree_flatten_with_path(params)[0]
  uses = collections.Counter(a for n in g.nodes if n.prim.name in _PRODUCTS
                             for a in n.ins if isinstance(a, int))
  kernel_of = {i: _key(p[0]) for i, (p, _) in zip(g.param_ids, paths)  # used once: the
               if len(p) == 2 and _key(p[1]) == "kernel" and uses[i] == 1}  # layer's op
  U, G = {g.x_id: jnp.ones(g.shapes[g.x_id], dtype)}, {g.x_id: 1.0}
  for n, kind in zip(g.nodes, plan.kinds):
    ins = [i for i in n.ins if isinstance(i, int) and i in g.bounded]
    if kind is None or not ins or any(i not in G for i in ins):
      continue
    o, i, name = n.outs[0], ins[0], n.prim.name
    shape = g.shapes[o]
    consts = [None if (isinstance(a, int) and a in g.bounded) else as_dtype(read(env, a), dtype)
              for a in n.ins]
    if kind == "act":
      f = 0.25 if name == "logistic" else 1.0
      U[o], G[o] = U[i] * f, G[i] * f
    elif kind == "max":
      over = _windows_per_element(n)
      if over is None:
        continue
      U[o], G[o] = bind(n, [U[i]], dtype)[0], G[i] * math.sqrt(over)
    elif name in _PRODUCTS:
      layer = next((kernel_of[a] for a in n.ins if isinstance(a, int) and a in kernel_of), None)
      if layer not in norms:
        continue
      sq = [None if c is None else c * c for c in consts]
      vals = [jnp.full(g.shapes[a], G[i] ** 2, dtype) if c is None else None
              for a, c in zip(n.ins, consts)]
      U[o] = jnp.sqrt(rules.abs_map(n, vals, sq, dtype, shape))  # Σ_i A_ui² G²
      G[o] = G[i] * norms[layer]
    elif name == "broadcast_in_dim":  # each unit copied size_out/size_in times
      U[o] = bind(n, [U[i]], dtype)[0]
      G[o] = G[i] * math.sqrt(math.prod(shape) / math.prod(g.shapes[i]))
    elif name in rules.ADDS and len(ins) == 1:  # a bias: both kept
      U[o], G[o] = jnp.broadcast_to(U[i], shape), G[i]
    elif name in _SAME_NORM:  # units moved one-to-one (neg flips the sign)
      U[o], G[o] = jnp.abs(bind(n, [U[i]], dtype)[0]), G[i]
    else:
      continue
    U[o] = jnp.minimum(U[o], G[o])
  return {v: u for v, u in U.items() if v != g.x_id}


def _key(k) -> str:
  return str(getattr(k, "key", getattr(k, "name", k)))


def _windows_per_element(n):
  """How many pooling windows share an input element (None: dilated)."""
  p = n.params
  if n.prim.name == "reduce_max":
    return 1
  if any(d != 1 for d in tuple(p.get("base_dilation", ())) + tuple(p.get("window_dilation", ()))):
    return None
  return math.prod(-(-w // s) for w, s in zip(p["window_dimensions"], p["window_strides"]))
