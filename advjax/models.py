"""The paper's networks as flat sequences of layers (Szegedy et al. §4.2, §4.3).

Every model is a tuple of `Layer` specs run by one generic Flax module, so that
  * `Model.apply(params, x)` is a pure function returning logits,
  * `Model.features(params, x, layer)` returns φ(x) of any named layer (§3),
  * `Model.layers` is the sequence the Lipschitz analysis walks (§4.3).

Names follow the paper: 'FC10(1e-4)', 'FC100-100-10', 'FC200-200-10',
'FC123-456-10', 'AE400-10', plus 'conv' (a small MNIST conv net), 'alexnet'
(the paper's AlexNet: 96-256-384-384-256 channels, LRN, 227×227 input) and
'alexnet-torchvision' (torchvision's 64-192-384-256-256 variant, 224×224).
The certified-training literature's MNIST nets: 'wong-small' (Wong et al.
2018's small conv net, LMT's and CAP's) and '4C3F' (GloRo's, Leino et al.
2021: MinMax activations, orthogonal initialisation).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from advjax import batching, evaluate, params_file

Params = Any
KINDS = ("dense", "conv", "sigmoid", "relu", "minmax", "maxpool", "lrn", "flatten",
         "dropout")
INITS = ("default", "orthogonal")


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer. `decay` is the weight decay λ on its kernel (Table 1).

  Attributes:
    name: unique name; also the Flax submodule name for 'dense' and 'conv'.
    kind: one of KINDS.
    features: output units (dense) or channels (conv).
    kernel: conv kernel (h, w); pooling window for 'maxpool'.
    stride: conv or pooling stride.
    padding: 'SAME', 'VALID' or explicit ((top, bottom), (left, right)).
    decay: λ for this layer's kernel in the loss ½·λ·Σw².
    rate: dropout rate; LRN uses (size, alpha, beta, k) from `lrn`.
    init: the kernel's initialiser: 'default' (Flax's LeCun normal) or
      'orthogonal' (GloRo's; any kernel shape, flattened to (fan_in, out)).
  """
  name: str
  kind: str
  features: int = 0
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  padding: Any = "SAME"
  decay: float = 0.0
  rate: float = 0.0
  lrn: tuple[float, float, float, float] = (5, 1e-4, 0.75, 2.0)
  init: str = "default"

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"layer {self.name!r}: kind {self.kind!r} not in {KINDS}")
    if self.init not in INITS:
      raise ValueError(f"layer {self.name!r}: init {self.init!r} not in {INITS}")


def minmax(x: jax.Array) -> jax.Array:
  """MinMax (GroupSort-2, Anil et al. 2019) over the last axis: each pair of
  units (2i, 2i+1) becomes (min, max). 1-Lipschitz and gradient-norm
  preserving; `advjax.certify` bounds it by its max/min-of-two rule."""
  if x.shape[-1] % 2:
    raise ValueError(f"minmax needs an even number of units, got {x.shape[-1]}.")
  a, b = x[..., 0::2], x[..., 1::2]
  return jnp.stack([jnp.minimum(a, b), jnp.maximum(a, b)], -1).reshape(x.shape)


def lrn(x: jax.Array, size: float, alpha: float, beta: float, k: float):
  """AlexNet's local response normalisation across channels (NHWC)."""
  n = int(size)
  sq = jnp.pad(x * x, [(0, 0)] * (x.ndim - 1) + [(n // 2, (n - 1) // 2)])
  s = sum(sq[..., i:i + x.shape[-1]] for i in range(n))
  return x / (k + alpha / n * s) ** beta


class Net(nn.Module):
  """Runs a tuple of `Layer`s: those after `after` (if given) up to `upto`."""
  layers: tuple[Layer, ...]

  @nn.compact
  def __call__(self, x, train: bool = False, upto: str | None = None,
               after: str | None = None):
    names = [L.name for L in self.layers]
    for n in (upto, after):
      if n is not None and n not in names:
        raise KeyError(f"no layer named {n!r}; layers: {names}")
    start = names.index(after) + 1 if after is not None else 0
    for L in self.layers[start:]:
      x = self._layer(L, x, train)
      if L.name == upto:
        break
    return x

  def _layer(self, L: Layer, x, train: bool):
    """Applies one layer."""
    init = ({"kernel_init": nn.initializers.orthogonal()} if L.init == "orthogonal"
            else {})
    if L.kind == "dense":
      return nn.Dense(L.features, name=L.name, **init)(x)
    if L.kind == "conv":
      return nn.Conv(L.features, L.kernel, strides=L.stride, padding=L.padding,
                     name=L.name, **init)(x)
    if L.kind == "minmax":
      return minmax(x)
    if L.kind == "sigmoid":
      return nn.sigmoid(x)
    if L.kind == "relu":
      return nn.relu(x)
    if L.kind == "maxpool":
      return nn.max_pool(x, L.kernel, strides=(L.stride, L.stride),
                         padding=L.padding)
    if L.kind == "lrn":
      return lrn(x, *L.lrn)
    if L.kind == "flatten":
      return x.reshape(x.shape[0], -1)
    return nn.Dropout(L.rate, deterministic=not train)(x)


@dataclasses.dataclass(frozen=True)
class Model:
  """A named network: its layers, input shape and class count (hashable)."""
  name: str
  layers: tuple[Layer, ...]
  input_shape: tuple[int, ...]
  num_classes: int

  @property
  def module(self) -> Net:
    return Net(self.layers)

  def init(self, key: jax.Array) -> Params:
    """Fresh parameters from a PRNG key (same key, same parameters)."""
    x = jnp.zeros((1,) + self.input_shape, jnp.float32)
    return self.module.init({"params": key}, x)["params"]

  def apply(self, params: Params, x: jax.Array, train: bool = False,
            rng: jax.Array | None = None) -> jax.Array:
    """Logits (B, K) of inputs (B, *input_shape); `rng` feeds dropout."""
    rngs = {"dropout": rng} if rng is not None else None
    return self.module.apply({"params": params}, x, train, rngs=rngs)

  def features(self, params: Params, x: jax.Array, layer: str) -> jax.Array:
    """φ(x): the output of the named layer (§3), shape (B, ...)."""
    return self.module.apply({"params": params}, x, False, layer)

  def apply_from(self, params: Params, h: jax.Array, after: str,
                 train: bool = False, rng: jax.Array | None = None) -> jax.Array:
    """Logits computed from φ(x) = h of layer `after` (the layers above it)."""
    rngs = {"dropout": rng} if rng is not None else None
    return self.module.apply({"params": params}, h, train, None, after, rngs=rngs)

  def layer_names(self) -> list[str]:
    return [L.name for L in self.layers]

  def param_layers(self) -> list[Layer]:
    """The layers that hold weights ('dense', 'conv')."""
    return [L for L in self.layers if L.kind in ("dense", "conv")]

  def weight_penalty(self, params: Params) -> jax.Array:
    """½ Σ_k λ_k Σ W_k² over kernels (biases are not decayed; see train.py)."""
    return sum((0.5 * L.decay * jnp.sum(params[L.name]["kernel"] ** 2)
                for L in self.param_layers() if L.decay), jnp.float32(0))


def _mlp(name: str, hidden: Sequence[int], decays: Sequence[float],
         act: str = "sigmoid", dropout: float = 0.0) -> Model:
  """Flatten, then sigmoid hidden layers, then 10 logits."""
  layers = [Layer("flatten", "flatten")]
  for i, (h, lam) in enumerate(zip(hidden, decays), 1):
    if dropout:
      layers.append(Layer(f"dropout{i}", "dropout", rate=dropout))
    layers += [Layer(f"fc{i}", "dense", h, decay=lam), Layer(f"{act}{i}", act)]
  if dropout and hidden:
    layers.append(Layer("dropout_out", "dropout", rate=dropout))
  layers.append(Layer("logits", "dense", 10, decay=decays[len(hidden)]))
  return Model(name, tuple(layers), (28, 28, 1), 10)


def _ae(lam: float) -> Model:
  """AE400-10: a sigmoid autoencoder's 400-unit code ('code'), softmax on top."""
  layers = (Layer("flatten", "flatten"), Layer("code", "dense", 400, decay=lam),
            Layer("sigmoid1", "sigmoid"), Layer("logits", "dense", 10, decay=lam))
  return Model("AE400-10", layers, (28, 28, 1), 10)


def _conv(lam: float = 1e-5) -> Model:
  """A small MNIST conv net: 2 × (5×5 conv, ReLU, 2×2 max-pool), FC128, FC10."""
  L = Layer
  layers = (L("conv1", "conv", 32, (5, 5), decay=lam), L("relu1", "relu"),
            L("pool1", "maxpool", kernel=(2, 2), stride=2, padding="VALID"),
            L("conv2", "conv", 64, (5, 5), decay=lam), L("relu2", "relu"),
            L("pool2", "maxpool", kernel=(2, 2), stride=2, padding="VALID"),
            L("flatten", "flatten"), L("fc1", "dense", 128, decay=lam),
            L("relu3", "relu"), L("logits", "dense", 10, decay=lam))
  return Model("conv", layers, (28, 28, 1), 10)


def _wong_small(act: str = "relu", init: str = "default", name: str = "wong-small") -> Model:
  """Wong et al. (2018)'s small MNIST conv net (LMT's and CAP's): conv 16@4×4
  stride 2 pad 1, ReLU, conv 32@4×4 stride 2 pad 1, ReLU, dense 100, ReLU, 10.
  With MinMax and orthogonal init it is GloRo's `minmax_cnn_2C2F` ('2C2F':
  its 'same' padding of a 4×4 stride-2 window on 28 or 14 pixels is 1 each side)."""
  L, pad = Layer, ((1, 1), (1, 1))
  layers = (L("conv1", "conv", 16, (4, 4), 2, pad, init=init), L(f"{act}1", act),
            L("conv2", "conv", 32, (4, 4), 2, pad, init=init), L(f"{act}2", act),
            L("flatten", "flatten"), L("fc1", "dense", 100, init=init), L(f"{act}3", act),
            L("logits", "dense", 10, init=init))
  return Model(name, layers, (28, 28, 1), 10)


def _4c3f(act: str = "minmax") -> Model:
  """GloRo's 4C3F (Leino et al. 2021): conv 32@3×3, 32@4×4 s2, 64@3×3, 64@4×4
  s2 (SAME), dense 512, 512, 10; MinMax activations, orthogonal init."""
  L, o = Layer, "orthogonal"
  convs = ((32, 3, 1), (32, 4, 2), (64, 3, 1), (64, 4, 2))
  layers = []
  for i, (c, k, s) in enumerate(convs, 1):
    layers += [L(f"conv{i}", "conv", c, (k, k), s, "SAME", init=o), L(f"{act}{i}", act)]
  layers += [L("flatten", "flatten"), L("fc1", "dense", 512, init=o), L(f"{act}5", act),
             L("fc2", "dense", 512, init=o), L(f"{act}6", act),
             L("logits", "dense", 10, init=o)]
  return Model("4C3F", tuple(layers), (28, 28, 1), 10)


def alexnet(torchvision: bool = False, num_classes: int = 1000,
            channels: Sequence[int] | None = None, hidden: int = 4096) -> Model:
  """AlexNet (Krizhevsky et al. 2012); weights come only from a file.

  `channels` (the five convolutions') and `hidden` (the two FC layers') default
  to the paper's widths (torchvision's with `torchvision=True`); narrower ones
  keep the geometry (input size, kernels, strides, 6×6 last maps) at a fraction
  of the cost, as the converter's test uses.
  """
  L = Layer
  default = (64, 192, 384, 256, 256) if torchvision else (96, 256, 384, 384, 256)
  ch = tuple(channels or default)
  if len(ch) != 5:
    raise ValueError(f"channels={ch}: AlexNet has 5 convolutions.")
  pool = dict(kernel=(3, 3), stride=2, padding="VALID")
  pad1 = ((2, 2), (2, 2)) if torchvision else "VALID"
  layers = [L("conv1", "conv", ch[0], (11, 11), 4, pad1), L("relu1", "relu")]
  layers += [] if torchvision else [L("lrn1", "lrn")]
  layers += [L("pool1", "maxpool", **pool),
             L("conv2", "conv", ch[1], (5, 5), 1, ((2, 2), (2, 2))),
             L("relu2", "relu")]
  layers += [] if torchvision else [L("lrn2", "lrn")]
  layers += [L("pool2", "maxpool", **pool)]
  for i, c in enumerate(ch[2:], 3):
    layers += [L(f"conv{i}", "conv", c, (3, 3), 1, ((1, 1), (1, 1))),
               L(f"relu{i}", "relu")]
  layers += [L("pool5", "maxpool", **pool), L("flatten", "flatten"),
             L("dropout1", "dropout", rate=0.5), L("fc1", "dense", hidden),
             L("relu6", "relu"), L("dropout2", "dropout", rate=0.5),
             L("fc2", "dense", hidden), L("relu7", "relu"),
             L("fc3", "dense", num_classes)]
  size = 224 if torchvision else 227
  name = "alexnet-torchvision" if torchvision else "alexnet"
  if ch != default or hidden != 4096 or num_classes != 1000:
    name += f"[{'-'.join(map(str, ch))}-{hidden}-{num_classes}]"  # not the named net
  return Model(name, tuple(layers), (size, size, 3), num_classes)


NAMES = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10",
         "FC123-456-10", "AE400-10", "conv", "alexnet", "alexnet-torchvision",
         "wong-small", "2C2F", "4C3F")


# Trained nets committed with the package (advjax/pretrained/<name>/: float32
# params.msgpack, meta.json with its training config, SHA-256 and measured figures).
PRETRAINED = ("gloro-2c2f", "lmt-wong-small")


def pretrained(name: str) -> tuple[Model, Params]:
  """A committed trained net: (model, params), `model.apply(params, x)` with x
  of shape (B, 28, 28, 1) in [0, 1] (no normalisation), so that a certified
  figure can be checked without retraining (issue 29). Its meta.json says how
  it was trained and what it measured.

  Raises:
    ValueError: an unknown name (the message lists `PRETRAINED`).
    params_file.CheckpointError: a damaged file (its SHA-256 is checked).
  """
  if name not in PRETRAINED:
    raise ValueError(f"no pretrained net {name!r}; choose one of {PRETRAINED}.")
  folder = os.path.join(os.path.dirname(__file__), "pretrained", name)
  meta = params_file.read_meta(folder)
  model = get_model(meta["model"])
  return model, params_file.restore(folder, jax.eval_shape(model.init, jax.random.PRNGKey(0)),
                                    meta)


def get_model(name: str, dropout: float = 0.0) -> Model:
  """A model by the paper's name (Table 1), e.g. 'FC10(1e-2)', 'FC100-100-10'.

  Args:
    name: 'FC10(λ)' for any λ, 'FC<h1>-<h2>-10' (sigmoid hidden layers, λ = 1e-5,
      1e-5, 1e-6 as in §4.2), 'AE400-10', 'conv', 'alexnet',
      'alexnet-torchvision'. A trailing "'" (the P2 model of Table 3) is allowed.
    dropout: dropout rate before each dense layer of an FC net (0 = none).

  Returns:
    The `Model`.
  """
  base = name.rstrip("'")
  m = re.fullmatch(r"FC10\(([0-9.eE+-]+)\)", base)
  if m:
    return _rename(_mlp(base, (), (float(m.group(1)),)), name)
  m = re.fullmatch(r"FC(\d+)-(\d+)-10", base)
  if m:
    hidden = (int(m.group(1)), int(m.group(2)))
    return _rename(_mlp(base, hidden, (1e-5, 1e-5, 1e-6), dropout=dropout), name)
  if dropout:
    raise ValueError(f"dropout is supported for FC<h1>-<h2>-10 nets only, not {name!r}.")
  builders = {"AE400-10": lambda: _ae(1e-6), "conv": _conv,
              "wong-small": _wong_small, "4C3F": _4c3f,
              "2C2F": lambda: _wong_small("minmax", "orthogonal", "2C2F"),
              "alexnet": alexnet,
              "alexnet-torchvision": lambda: alexnet(torchvision=True)}
  if base not in builders:
    raise ValueError(f"unknown model {name!r}; known: {NAMES} "
                     "(FC10(λ) takes any λ).")
  return _rename(builders[base](), name)


def _rename(model: Model, name: str) -> Model:
  return dataclasses.replace(model, name=name)


def num_params(params: Params) -> int:
  """Number of scalars in a parameter tree."""
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


_PREDICT: dict = {}  # one jitted argmax per model, so repeated calls never retrace


def predict(model: Model, params: Params, x, batch_size: int = 500) -> np.ndarray:
  """Argmax labels of `x` (§4.2) in fixed-size batches (one compile per model).

  The last batch is padded to `batch_size` (`batching.pad`), so every call of
  a model runs one compiled shape.
  """
  if model not in _PREDICT:
    _PREDICT[model] = jax.jit(lambda p, z: jnp.argmax(model.apply(p, z), -1))
  x = np.asarray(x)
  out = []
  for i in range(0, len(x), batch_size):
    xb = batching.pad(x[i:i + batch_size], batch_size)
    out.append(np.asarray(_PREDICT[model](params, xb)))
  return np.concatenate(out)[:len(x)] if out else np.zeros(0, np.int32)


def error_rate(model: Model, params: Params, x, y, batch_size: int = 500) -> float:
  """Share of misclassified examples (the error rates of Tables 1 and 3)."""
  if len(x) == 0:
    raise ValueError("error_rate of an empty set is undefined.")
  return evaluate.error_rate(lambda z: predict(model, params, z, batch_size), x, y)
