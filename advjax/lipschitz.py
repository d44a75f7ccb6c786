"""Deprecated (one release): Table 5's layer bounds are `advjax.norms.layers`."""

from advjax import moved

__getattr__, __dir__ = moved.alias(__name__, "advjax.norms.layers")
