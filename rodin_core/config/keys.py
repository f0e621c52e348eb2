"""Dotted config keys (``section.sub.field``) on a tree of config dataclasses: lookup, typed assignment, merge.

The presets, YAML files, ``--set`` overrides and saved configs of :mod:`rodin_core.config` (the
settings of paper §4.1 and appendix B) all write into the tree through :func:`set_key` and
:func:`merge`, which check every key against the dataclass fields and every value against the
field's annotation, and record what they set so that derived fields can be checked against it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from rodin_core.config_dict import ConfigError


def join(where: str, name: str) -> str:
    """The dotted key of field ``name`` inside the section at ``where`` ('' for the root)."""
    return f"{where}.{name}" if where else name


def field_names(obj: Any) -> list[str]:
    """The field names of the dataclass ``obj``, in declaration order."""
    return [f.name for f in dataclasses.fields(obj)]


def get_key(root: Any, key: str) -> Any:
    """The value at dotted ``key`` below ``root`` (the key must exist)."""
    value = root
    for part in key.split("."):
        value = getattr(value, part)
    return value


def set_key(root: Any, key: str, value: Any, given: dict[str, Any]) -> None:
    """Set the field at dotted ``key`` below ``root`` to ``value`` (coerced), recording it in ``given``."""
    path = key.split(".")
    target = root
    for depth, part in enumerate(path[:-1]):
        target = _section(target, part, ".".join(path[:depth]))
    _set_field(target, path[-1], value, ".".join(path[:-1]), given)


def merge(target: Any, data: Mapping[str, Any], where: str, given: dict[str, Any]) -> None:
    """Write the nested mapping ``data`` into the section ``target`` at ``where``, recording it in ``given``."""
    for key, value in data.items():
        name = join(where, str(key))
        current = getattr(target, key) if key in field_names(target) else None
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} must be a mapping of fields, got {value!r}")
            merge(current, value, name, given)
        else:
            _set_field(target, str(key), value, where, given)


def _section(obj: Any, name: str, where: str) -> Any:
    _check_key(obj, name, where)
    section = getattr(obj, name)
    if not dataclasses.is_dataclass(section):
        raise ConfigError(f"{join(where, name)} is a field, not a section; write {join(where, name)}=VALUE")
    return section


def _check_key(obj: Any, name: str, where: str) -> None:
    names = field_names(obj)
    if name not in names:
        nested = [f"{section}.{sub}" for section in names if dataclasses.is_dataclass(getattr(obj, section))
                  for sub in field_names(getattr(obj, section))]
        close = difflib.get_close_matches(name, names + nested, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown config key {join(where, name)!r}{hint}; valid keys"
            f"{' in ' + repr(where) if where else ''}: {', '.join(names)}"
        )


def _set_field(obj: Any, name: str, value: Any, where: str, given: dict[str, Any]) -> None:
    _check_key(obj, name, where)
    key = join(where, name)
    if dataclasses.is_dataclass(getattr(obj, name)):
        raise ConfigError(f"{key} is a section; set its fields, e.g. {key}.FIELD=VALUE")
    coerced = _coerce(key, value, _hints(type(obj))[name])
    setattr(obj, name, coerced)
    given[key] = coerced


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved field annotations of the config dataclass ``cls``."""
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's annotation; ints are accepted for floats."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:  # tuple[int, ...] fields: a YAML list or a single int
        items = [value] if isinstance(value, int) else value
        if isinstance(items, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return tuple(items)
        raise ConfigError(f"bad value for {key}: {value!r} is not a list of ints, e.g. {key}=[1,2]")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        return _finite_float(key, value)
    elif hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"bad value for {key}: {value!r} is not a {getattr(hint, '__name__', hint)}")


def _finite_float(key: str, value: Any) -> float:
    """``value`` (a number, or a numeric string) as a finite float; :class:`ConfigError` otherwise."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value) if not isinstance(value, int) or abs(value) < 2**1023 else math.inf
    elif isinstance(value, str):  # YAML 1.1 reads exponents without a dot ("1e-3") as strings
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None:
        raise ConfigError(f"bad value for {key}: {value!r} is not a float")
    if not math.isfinite(number):
        raise ConfigError(f"bad value for {key}: {value!r} is not a finite number; set a finite value")
    return number
