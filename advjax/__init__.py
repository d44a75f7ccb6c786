"""advjax: a JAX reimplementation of Szegedy et al., "Intriguing properties of
neural networks" (arXiv 1312.6199).

`import advjax` is light: each subpackage and module is imported on first use,
so `import advjax; advjax.certify.radius(...)` works. The public API is the
table in README.md ("The library").
"""

import importlib

__version__ = "0.1.0"

# The public subpackages and modules, imported on first attribute access.
SUBMODULES = ("attack", "certify", "runs", "norms", "data", "models", "train",
              "checkpoint", "evaluate", "advtrain", "protocol", "units", "criteria",
              "inputs", "adapt", "reference", "convert", "autoencoder", "batching",
              "platform", "cli")


def __getattr__(name: str):
  if name in SUBMODULES:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(SUBMODULES))
