"""Old import paths kept for one release: each is a module whose attributes
are read from the new place, with a `DeprecationWarning` naming the new import.

    # advjax/attacks.py
    __getattr__, __dir__ = moved.alias("advjax.attacks", "advjax.attack")
"""

from __future__ import annotations

import importlib
import warnings


def alias(old: str, new: str, **elsewhere: str):
  """(__getattr__, __dir__) for the deprecated module `old`: `old.NAME` is
  `new.NAME` (or `elsewhere[NAME].NAME`), and every read warns naming the new
  import."""

  def target(name: str) -> str:
    return elsewhere.get(name, new)

  def __getattr__(name: str):  # pylint: disable=invalid-name
    if name.startswith("__"):
      raise AttributeError(f"module {old!r} has no attribute {name!r}")
    module = target(name)
    value = getattr(importlib.import_module(module), name)
    warnings.warn(f"{old} is deprecated and goes in the next release: use "
                  f"{module}.{name} (from {module.rsplit('.', 1)[0]} import "
                  f"{module.rsplit('.', 1)[1]}).", DeprecationWarning, stacklevel=2)
    return value

  def __dir__():  # pylint: disable=invalid-name
    names = set(dir(importlib.import_module(new))) | set(elsewhere)
    return sorted(n for n in names if not n.startswith("_"))

  return __getattr__, __dir__
