"""Deprecated (one release): the operator norms' certified upper bounds are
`advjax.norms.upper_bounds`."""

from advjax import moved

__getattr__, __dir__ = moved.alias(__name__, "advjax.norms.upper_bounds")
