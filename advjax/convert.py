"""PyTorch AlexNet weights → advjax parameters (for Table 5 on real weights, §4.3).

torchvision's AlexNet state_dict names its layers features.0/3/6/8/10 (convs)
and classifier.1/4/6 (linear). The conversion handles the three layout
differences: conv kernels OIHW → HWIO, linear weights (out, in) → (in, out),
and the flatten before classifier.1, which is over (C, H, W) in PyTorch's NCHW
and over (H, W, C) in advjax's NHWC. torchvision's AdaptiveAvgPool2d((6, 6)) is
the identity on its 6×6 maps at 224×224 input, so advjax omits it.

torch is optional: `.npz` files (key → array) load without it.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np

from advjax import models

TORCHVISION_KEYS = {"conv1": "features.0", "conv2": "features.3",
                    "conv3": "features.6", "conv4": "features.8",
                    "conv5": "features.10", "fc1": "classifier.1",
                    "fc2": "classifier.4", "fc3": "classifier.6"}


def _array(t: Any) -> np.ndarray:
  """A torch tensor or array-like as a float32 numpy array."""
  if hasattr(t, "detach"):
    t = t.detach().cpu().numpy()
  return np.asarray(t, np.float32)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a state_dict from a torch file (.pt/.pth, needs torch) or an .npz.

  A checkpoint that wraps the state_dict under 'state_dict' or 'model', or
  that was saved from nn.DataParallel ('module.' prefixes), is unwrapped.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: pass a torchvision AlexNet "
                            "state_dict (.pth) or an .npz of its tensors.")
  if path.endswith(".npz"):
    with np.load(path) as z:
      sd = {k: z[k] for k in z.files}
  else:
    try:
      import torch
    except ImportError as e:
      raise ImportError(f"reading {path} needs torch: pip install "
                        "'advjax[torch]' (the CPU wheel: pip install torch "
                        "--index-url https://download.pytorch.org/whl/cpu), "
                        "or convert it to .npz first.") from e
    sd = torch.load(path, map_location="cpu", weights_only=True)
  for wrapper in ("state_dict", "model"):
    if isinstance(sd.get(wrapper), Mapping):
      sd = sd[wrapper]
  return {k.removeprefix("module."): _array(v) for k, v in sd.items()}


def alexnet_from_torchvision(state_dict: Mapping[str, Any],
                             model: str | models.Model = "alexnet-torchvision") -> dict:
  """advjax parameters for an AlexNet `model` from a torch state_dict.

  Args:
    state_dict: torchvision key names ('features.0.weight', ...) → tensors or
      arrays, as `torchvision.models.alexnet().state_dict()` or
      `load_state_dict(path)` give.
    model: 'alexnet-torchvision' (64-192-384-256-256, 224×224), 'alexnet'
      (96-256-384-384-256 with the same key layout, 227×227), or a
      `models.alexnet(...)` of other widths.

  Returns:
    A params dict {'conv1': {'kernel', 'bias'}, ...} of float32 numpy arrays.

  Raises:
    ValueError: a key is missing or a shape does not fit the model.
  """
  model = models.get_model(model) if isinstance(model, str) else model
  template = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  params = {}
  for name, key in TORCHVISION_KEYS.items():
    for part in ("weight", "bias"):
      if f"{key}.{part}" not in state_dict:
        raise ValueError(f"state_dict has no {key}.{part!r} (advjax {name}); "
                         "expected torchvision AlexNet key names "
                         f"{sorted(TORCHVISION_KEYS.values())}.")
    w, b = _array(state_dict[f"{key}.weight"]), _array(state_dict[f"{key}.bias"])
    want = template[name]["kernel"].shape
    if w.ndim == 4:
      kernel = w.transpose(2, 3, 1, 0)  # OIHW → HWIO
    elif name == "fc1":
      kernel = _fc1_kernel(w, template["conv5"]["kernel"].shape[-1], want)
    else:
      kernel = w.T
    if kernel.shape != want or b.shape != template[name]["bias"].shape:
      raise ValueError(f"{key}.weight has shape {w.shape} (→ {kernel.shape}) "
                       f"but {model.name}'s {name} needs kernel {want}; "
                       "these are not this model's weights.")
    params[name] = {"kernel": np.ascontiguousarray(kernel), "bias": b}
  return params


def _fc1_kernel(w: np.ndarray, channels: int, want: tuple[int, ...]) -> np.ndarray:
  """classifier.1 (out, C·H·W) → kernel (H·W·C, out): NCHW vs NHWC flatten."""
  out, fan_in = w.shape
  side = int(round((fan_in / channels) ** 0.5))
  if side * side * channels != fan_in:
    raise ValueError(f"classifier.1.weight has {fan_in} inputs, not "
                     f"{channels}×h×h; expected kernel {want}.")
  return w.reshape(out, channels, side, side).transpose(2, 3, 1, 0).reshape(
      fan_in, out)


def load_alexnet(path: str, model: str | models.Model = "alexnet-torchvision"):
  """(model, params) from a torchvision AlexNet weights file (.pth or .npz)."""
  model = models.get_model(model) if isinstance(model, str) else model
  return model, alexnet_from_torchvision(load_state_dict(path), model)
