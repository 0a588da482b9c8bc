"""YAML run configurations: ``_base_`` inheritance, ``key.sub=value`` overrides and validation.

A preset names its parents with ``_base_`` (a path or a list of paths, relative to the preset's own
file); parents are merged first, in order, and the child's mappings are merged into them key by
key (lists and scalars replace). Command-line overrides (``optim.lr=0.001``,
``transforms.train=[]``) are applied last; each value is parsed as YAML (safe loading) so numbers,
booleans, lists and ``null`` mean what they look like (``1e-3`` included, which YAML 1.1 reads as text).

Validation catches the mistakes that would otherwise surface hours into a run: a misspelt key, a
string where a number belongs. Sections that mirror a dataclass of another module (``optim``,
``projection``, ``trainer``, ``model.ptv3``) are checked against that dataclass's fields, so the
schema cannot drift from the code that consumes it.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

BASE_KEY = "_base_"
Number = (int, float)
OptStr = (str, type(None))
OptList = (list, type(None))
OptInt = (int, type(None))


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; learning rates are written that way, so
    exponent floats without a dot are floats here, as in YAML 1.2."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# ------------------------------------------------------------------------------------------ schema
# A schema maps keys to a type (or tuple of types), a nested schema, or ANY (not checked further).
ANY = object()

_DATASET = {
    "name": str, "root": OptStr, "splits": dict, "segment": OptStr, "num_classes": int,
    "class_names": OptList, "ignore_index": int, "input_features": list, "loop": int,
}
_IMAGES = {
    "enabled": bool, "views_per_sample": OptInt, "train_views": str, "eval_views": str,
    "pad_views": bool, "resolution": OptList, "view_strategy": str, "color_jitter": OptList,
}
_VFM = {
    "model": str, "checkpoint": OptStr, "cache": OptStr, "precision": str, "pos_interpolation": str,
    "online": bool, "device": str, "download": bool,
}
_TEST_TIME = {"variants": list}
_LOSS = {"ce_weight": Number, "lovasz_weight": Number, "class_weights": OptList, "label_smoothing": Number}
_DISTILL = {"head_channels": OptInt, "loss": str, "datasets": OptList}
_INJECTION = {"missing": str, "pool_reduce": str, "dropout": Number}


def _dataclass_schema(cls: type, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """Keys of a dataclass with the type of their default (ANY where the default is None)."""
    schema: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        if default is None:
            schema[f.name] = ANY
        elif isinstance(default, bool):
            schema[f.name] = bool
        elif isinstance(default, (int, float)):
            schema[f.name] = Number
        elif isinstance(default, (list, tuple)):
            schema[f.name] = list
        else:
            schema[f.name] = type(default)
    return schema


def root_schema() -> dict[str, Any]:
    """The schema of a whole run configuration (built on demand: it imports the engine and models)."""
    from ..engine.optim import OptimConfig
    from ..engine.trainer import TrainerConfig
    from ..models.ptv3 import PTv3Config
    from ..projection import ProjectionConfig

    model = {"name": str, "backbone": str, "image_channels": OptInt,
             "injection": _INJECTION, "ptv3": _dataclass_schema(PTv3Config)}
    return {
        "name": str, "description": str,
        "dataset": _DATASET, "images": _IMAGES, "vfm": _VFM,
        "projection": _dataclass_schema(ProjectionConfig),
        "transforms": {"train": list, "val": list, "test": list},
        "mix3d": {"p": Number}, "test_time": _TEST_TIME, "model": model,
        "optim": _dataclass_schema(OptimConfig), "trainer": _dataclass_schema(TrainerConfig),
        "loss": _LOSS, "distill": _DISTILL,
        "init": dict,  # written by train(): where a fine-tuned model started (ditr.distill.load_init)
    }


def _type_name(t: Any) -> str:
    types = t if isinstance(t, tuple) else (t,)
    return " or ".join("null" if x is type(None) else "number" if x is float else x.__name__
                       for x in dict.fromkeys(float if x in (int, float) else x for x in types))


def validate(config: Mapping[str, Any], where: str, schema: Mapping[str, Any] | None = None,
             prefix: str = "") -> None:
    """Raise :class:`ConfigError` for unknown keys and values of the wrong type."""
    schema = root_schema() if schema is None else schema
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(where, dotted, f"unknown key (known here: {known})")
        rule = schema[key]
        if rule is ANY:
            continue
        if isinstance(rule, dict):
            if not isinstance(value, dict):
                raise ConfigError(where, dotted, f"must be a mapping, got {type(value).__name__} {value!r}")
            validate(value, where, rule, dotted + ".")
            continue
        types = rule if isinstance(rule, tuple) else (rule,)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            raise ConfigError(where, dotted, f"must be {_type_name(rule)}, got {type(value).__name__} {value!r}")


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


def load_config(path: str | Path | Sequence[str | Path], overrides: Sequence[str] = (), *,
                check: bool = True) -> dict[str, Any]:
    """Read a preset with its ``_base_`` chain, apply ``key.sub=value`` overrides and validate.

    Several paths are merged in order (``["configs/scannet.yaml", "configs/method/ptv3.yaml"]``:
    a dataset preset, then a method fragment). Errors name the file (or ``override``) and the key.
    """
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    config: dict[str, Any] = {}
    for p in paths:
        part = _load_tree(p, ())
        if check:
            validate(part, str(p))
        config = merge(config, part)
    for item in overrides:
        apply_override(config, item)
    if check and overrides:
        validate(config, f"overrides {list(overrides)}")
    return config
