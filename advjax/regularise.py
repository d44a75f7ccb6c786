"""Deprecated (one release): the layer-bound regulariser is `advjax.norms.regulariser`."""

from advjax import moved

__getattr__, __dir__ = moved.alias(__name__, "advjax.norms.regulariser")
