"""Deprecated (one release): operator norms are `advjax.norms.spectral`."""

from advjax import moved

__getattr__, __dir__ = moved.alias(__name__, "advjax.norms.spectral")
