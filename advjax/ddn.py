"""Deprecated (one release): DDN is `advjax.attack.ddn`."""

from advjax import moved

__getattr__, __dir__ = moved.alias(__name__, "advjax.attack.ddn")
