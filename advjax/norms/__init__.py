"""§4.3 of the paper: operator norms of the layers and the network's layer-wise
Lipschitz bounds (Table 5). Upper bounds on how far a layer can move its input,
not certified radii of examples (those are `advjax.certify`).

* `spectral`: the operator norm ‖W‖₂ of a dense or conv layer (scipy eigsh,
  optax power iteration) as a lower estimate with a certified upper bound;
* `upper_bounds`: those certified upper bounds (Cholesky, Gram iteration, the
  polyphase FFT bound of strided convolutions);
* `conv_geometry`: the convolution as a linear map (dilation, padding, the
  zero-padded embedding);
* `layers`: every layer's bound L_k and their product (Table 5), empirical
  lower bounds from Jacobians;
* `regulariser`: the paper's suggestion, the layer bounds in the training loss
  (and Lipschitz-margin training).
"""

import importlib

SUBMODULES = ("conv_geometry", "layers", "regulariser", "spectral", "upper_bounds")


def __getattr__(name: str):
  if name in SUBMODULES:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
