"""Typed sections from plain mappings: the schema of a config section IS its dataclass.

:func:`from_mapping` builds a dataclass instance from a mapping (a YAML section, a stored run
config), checking every key against the dataclass's fields and every value against the field's
type hint: unknown keys and wrong types are a :class:`~ditr.errors.ConfigError` naming where and
the dotted key. Because the check reads the type hints of the very classes the code consumes,
the accepted keys and types cannot drift from the code. :func:`to_mapping` is the inverse (plain
lists, strings and numbers, ready for YAML, JSON or a checkpoint).

Fields whose ``metadata`` has ``run_config=False`` are set by the program (a work directory, the
class count taken from the dataset section) and are neither read nor written here.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError

T = TypeVar("T")


def config_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a dataclass that belong to the run configuration."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("run_config", True)]


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type_name(a) for a in typing.get_args(hint)))
    if hint is type(None):
        return "null"
    if hint in (int, float):
        return "number" if hint is float else "integer"
    if hint is bool:
        return "bool"
    if hint is str:
        return "string"
    if origin in (list, tuple) or hint in (list, tuple):
        return "list"
    if origin in (dict, Mapping) or hint is dict:
        return "mapping"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if dataclasses.is_dataclass(hint):
        return "mapping"
    return getattr(hint, "__name__", str(hint))


#: Scalar hints: the Python types a value may have (bools only where the hint is bool) and the conversion.
_SCALARS: dict[Any, tuple[tuple[type, ...], Any]] = {
    bool: ((bool,), lambda v: v),
    int: ((int,), lambda v: v),
    float: ((int, float), lambda v: v if isinstance(v, float) else float(v)),
    str: ((str,), lambda v: v),
    Path: ((str, Path), Path),
}


class _Mismatch(Exception):
    """A value that does not fit a type hint (turned into a ConfigError with the key)."""


def _coerce(value: Any, hint: Any, where: str, key: str) -> Any:
    """``value`` checked against ``hint`` (and converted: tuples, enums, nested dataclasses)."""
    if hint is Any or hint is object:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, key)
            except _Mismatch:
                continue
        raise _Mismatch
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return from_mapping(hint, value, where, key + ".")  # type: ignore[arg-type]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise _Mismatch from None
    if origin is typing.Literal:
        if value in typing.get_args(hint) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint in _SCALARS:
        accepted, convert = _SCALARS[hint]
        if isinstance(value, accepted) and (hint is bool or not isinstance(value, bool)):
            return convert(value)
        raise _Mismatch
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _Mismatch
            items = [_coerce(v, a, where, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item = args[0] if args else Any
            items = [_coerce(v, item, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or hint is tuple) else items
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return dict(value)
    raise TypeError(f"config schema: unsupported type hint {hint!r} for {key}")


def check_fields(cls: type, values: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """``values`` checked against the run-config fields of dataclass ``cls`` (keys and types), converted."""
    if not isinstance(values, Mapping):
        raise ConfigError(where, prefix.rstrip(".") or None, f"must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in config_fields(cls)}
    checked: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(where, dotted, f"unknown key (known here: {', '.join(sorted(fields))})")
        hint = hints[key]
        try:
            checked[key] = _coerce(value, hint, where, dotted)
        except _Mismatch:
            raise ConfigError(where, dotted, f"must be {_type_name(hint)}, got {type(value).__name__} "
                                             f"{value!r}") from None
    return checked


def from_mapping(cls: type[T], values: Mapping[str, Any], where: str, prefix: str = "") -> T:
    """An instance of dataclass ``cls`` from ``values``; errors name ``where`` and the dotted key."""
    kwargs = check_fields(cls, values, where, prefix)
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a section's own check that could not know the file or section: name them now
        if exc.where:
            raise
        key = prefix + exc.key if exc.key else prefix.rstrip(".") or None
        raise ConfigError(where, key, exc.problem) from None
    except (TypeError, ValueError) as exc:  # a section's own check (__post_init__) in plain words
        raise ConfigError(where, prefix.rstrip(".") or None, str(exc)) from None


def to_mapping(obj: Any) -> Any:
    """Plain data (dicts, lists, strings, numbers, None) of a config dataclass, recursively."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in config_fields(type(obj))}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_mapping(v) for k, v in obj.items()}
    return obj


def schema_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass, nested sections expanded (for docs and checks)."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in config_fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys += schema_keys(hint, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            keys.append(f"{prefix}{f.name}")
    return keys
