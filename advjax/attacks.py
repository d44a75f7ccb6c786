"""Deprecated (one release): the §4.1 attack is `advjax.attack`."""

from advjax import moved

__getattr__, __dir__ = moved.alias(__name__, "advjax.attack")
