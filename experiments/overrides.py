"""Command-line overrides of configs: `--config.a.b=VALUE` and its inverse.

Paths are dotted field names into frozen dataclasses and NamedTuples; values
are coerced to the type of the field's current value, so `format_value` and
`coerce` round-trip and a recorded command reproduces its config exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

def is_record(x: Any) -> bool:
  """A dataclass instance or a NamedTuple: something with named fields."""
  return (dataclasses.is_dataclass(x) and not isinstance(x, type)) or (
      isinstance(x, tuple) and hasattr(x, "_fields"))


def fields(x: Any) -> list[str]:
  """Field names; a record with a flat view (`AttackOptions.flat`) by its flat
  names, so that `--config.attack.maxiter=50` stays the spelling."""
  if hasattr(x, "flat"):
    return list(x.flat())
  return ([f.name for f in dataclasses.fields(x)] if dataclasses.is_dataclass(x)
          else list(x._fields))


def _replace(x: Any, **kw) -> Any:
  return dataclasses.replace(x, **kw) if dataclasses.is_dataclass(x) else x._replace(**kw)


def _scalar(text: str, like: Any, path: str) -> Any:
  """`text` as the type of `like` (a guess among int, float, str when None)."""
  low = text.strip().lower()
  if low in ("none", "null"):
    return None
  try:
    if isinstance(like, bool):
      if low not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(text)
      return low in ("true", "1", "yes")
    if isinstance(like, int):
      return int(text)
    if isinstance(like, float):
      return float(text)
  except ValueError:
    raise ValueError(f"--config.{path}={text!r}: expected a "
                     f"{type(like).__name__} like {like!r}.") from None
  if like is None:  # no type to go by: the narrowest reading
    for t in (int, float):
      try:
        return t(text)
      except ValueError:
        pass
  return text


def coerce(text: str, like: Any, path: str = "") -> Any:
  """A command-line value as the type of the field's current value `like`."""
  if is_record(like):
    raise ValueError(f"--config.{path} is a record; set its fields, e.g. "
                     f"--config.{path}.{fields(like)[0]}=...")
  if isinstance(like, tuple):
    if any(is_record(v) for v in like):
      raise ValueError(f"--config.{path} holds records; it cannot be set from "
                       "the command line (edit the config, or use --only).")
    elem = like[0] if like else None
    return tuple(_scalar(t, elem, path) for t in text.split(",") if t != "")
  return _scalar(text, like, path)


def override(cfg: Any, path: str, text: str) -> Any:
  """`cfg` with the field at dotted `path` set from the string `text`."""
  head, _, rest = path.partition(".")
  if not is_record(cfg) or head not in fields(cfg):
    known = fields(cfg) if is_record(cfg) else []
    raise ValueError(f"--config.{path}: no field {head!r}; fields: {known}.")
  cur = getattr(cfg, head)
  new = override(cur, rest, text) if rest else coerce(text, cur, path)
  return _replace(cfg, **{head: new})


def format_value(v: Any) -> str:
  """The command-line spelling of a value (the inverse of `coerce`)."""
  if v is None:
    return "none"
  if isinstance(v, bool):
    return "true" if v else "false"
  if isinstance(v, tuple):
    return ",".join(format_value(e) for e in v) + ("," if len(v) == 1 else "")
  return str(v)


def diff(default: Any, cfg: Any, prefix: str = "") -> list[tuple[str, Any]]:
  """(dotted path, value) of every leaf where `cfg` differs from `default`."""
  if is_record(default) and type(default) is type(cfg):
    out = []
    for f in fields(default):
      out += diff(getattr(default, f), getattr(cfg, f), prefix + f + ".")
    return out
  return [] if default == cfg else [(prefix[:-1], cfg)]
