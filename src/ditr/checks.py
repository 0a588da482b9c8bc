"""Range checks for configuration values, shared by every config dataclass's ``__post_init__``.

A value that type-checks can still train a bad model silently (a negative gradient clip flips the
gradient, a NaN tolerance hides every point), so each section checks its ranges where its values
are defined. Every check raises a :class:`~ditr.errors.ConfigError` with an empty ``where`` and the
field's key relative to its section; :func:`ditr.configs.schema.from_mapping` adds the file and the
section (``scannet.yaml: trainer.grad_clip: must be > 0 or null, got -1.0``).

NaN fails every check (``math.isfinite`` first: NaN compares false with everything, so ``x < 0``
alone would let it through), and so do infinities unless a check says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

from .errors import ConfigError


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def number(key: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, optional: bool = False, integer: bool = False) -> None:
    """``value`` is a finite number (an integer when ``integer``) in the given range, or None when
    ``optional``; else a ConfigError naming ``key``."""
    if value is None and optional:
        return
    limits = _range_text(low, high, low_open, high_open)
    what = f"must be {'an integer' if integer else 'a finite number'}{' ' + limits if limits else ''}"
    what += " or null" if optional else ""
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if ok and not integer:
        ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError("", key, f"{what}, got {value!r}")


def positive_int(key: str, value: Any, *, optional: bool = False, high: int | None = None) -> None:
    """An integer >= 1 (at most ``high``), or None when ``optional``."""
    number(key, value, low=1, high=high, optional=optional, integer=True)


def numbers(key: str, values: Any, *, length: int | None = None, **limits: Any) -> None:
    """A list of numbers, each passing :func:`number` with ``limits`` (and exactly ``length`` of them)."""
    if values is None and limits.get("optional"):
        return
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise ConfigError("", key, f"must be a list of numbers, got {values!r}")
    if length is not None and len(values) != length:
        raise ConfigError("", key, f"must have {length} entries, got {len(values)}: {list(values)!r}")
    for i, v in enumerate(values):
        number(f"{key}[{i}]", v, **{name: limit for name, limit in limits.items() if name != "optional"})


def one_of(key: str, value: Any, choices: Collection[Any]) -> None:
    if value not in choices or isinstance(value, bool):
        raise ConfigError("", key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")


def non_empty(key: str, value: Any, *, optional: bool = False) -> None:
    """A non-empty string (a path, a name), or None when ``optional``."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("", key, f"must be a non-empty string{' or null' if optional else ''}, got {value!r}")


def distinct(key: str, values: Sequence[Any]) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise ConfigError("", key, f"lists {v!r} twice")
        seen.add(v)
