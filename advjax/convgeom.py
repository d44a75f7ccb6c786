"""Deprecated (one release): the convolution geometry are `advjax.norms.conv_geometry`."""

from advjax import moved

__getattr__, __dir__ = moved.alias(__name__, "advjax.norms.conv_geometry")
