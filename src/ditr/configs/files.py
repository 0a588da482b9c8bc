"""YAML run configuration files: ``_base_`` inheritance and ``key.sub=value`` overrides.

A preset names its parents with ``_base_`` (a path or a list of paths, relative to the preset's own
file); parents are merged first, in order, and the child's mappings are merged into them key by
key (lists and scalars replace). Command-line overrides (``optim.lr=0.001``,
``transforms.train=[]``) are applied last; each value is parsed as YAML (safe loading) so numbers,
booleans, lists and ``null`` mean what they look like (``1e-3`` included, which YAML 1.1 reads as text).

This module only reads and merges plain mappings; :mod:`ditr.configs.run` turns the result into the
typed :class:`~ditr.configs.run.RunConfig`, whose dataclasses are the schema.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

BASE_KEY = "_base_"


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; learning rates are written that way, so
    exponent floats without a dot are floats here, as in YAML 1.2."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# ------------------------------------------------------------------------------------------ loading
def merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, everything else in ``child`` replaces ``base``."""
    out = copy.deepcopy(dict(base))
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(str(path), None, "config file not found")
    try:
        data = parse_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), None, f"is not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), None, f"must hold a mapping at the top level, got {type(data).__name__}")
    return data


def _load_tree(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        raise ConfigError(str(path), BASE_KEY, "inherits from itself: " + " -> ".join(p.name for p in (*chain, path)))
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(str(path), BASE_KEY, "must be a path or a list of paths (relative to this file)")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = merge(merged, _load_tree(path.parent / base, (*chain, path)))
    return merge(merged, data)


def apply_override(config: dict[str, Any], override: str) -> dict[str, Any]:
    """Set ``a.b.c=value`` (value parsed as YAML); missing intermediate mappings are created."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError("override", override, "must look like section.key=value (e.g. optim.lr=0.001)")
    try:
        value = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError("override", key, f"value {text!r} is not valid YAML ({exc})") from None
    node = config
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError("override", key, f"{'.'.join(parts[:i + 1])} is a {type(child).__name__}, not a mapping")
        node = child
    node[parts[-1]] = value
    return config


def read_config_files(paths: Sequence[str | Path],
                      check: Callable[[dict[str, Any], str], None] | None = None) -> dict[str, Any]:
    """Read YAML files with their ``_base_`` chains and merge them in order.

    ``check(part, file)`` is called on each file's own content first, so that an error can name
    the file that holds the bad key.
    """
    config: dict[str, Any] = {}
    for p in paths:
        part = _load_tree(Path(p), ())
        if check is not None:
            check(part, str(p))
        config = merge(config, part)
    return config
