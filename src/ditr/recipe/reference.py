"""The reference's recipe and our declared differences, read from the package's data files.

``reference.yaml`` holds the reference's released configurations in our configuration keys (one
entry per configuration, with ``base`` inheritance) and which entry each preset and method
follows; ``differences.yaml`` lists every intended difference with its reason. Both are data: they
are parsed, never executed, and checked for shape here so that a typo fails loudly.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from ..errors import DitrError

METHODS = ("ditr", "ptv3", "d-ditr")
#: Keys of an image entry that a 3D-only run has no use for (its images, VFM, projection and injection).
IMAGE_KEY_PREFIXES = ("images.", "vfm.", "projection.", "model.injection.", "model.image_channels")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); lists are values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


@dataclass
class Entry:
    """One reference configuration: its settings (dotted keys), extra distillation sources, and what
    it is (``config``: the reference file, ``reports``: the published result it stands behind)."""

    name: str
    config: str
    reports: str
    settings: dict[str, Any]
    sources: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CardSpec:
    """Which reference entry a preset's method follows, and the preset that runs it (D-DITR: the
    distillation preset of stage 1)."""

    preset: str
    method: str
    entry: str
    run_preset: str
    config: str | None = None
    reports: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Declared:
    """An intended difference: ``key`` (a glob; brackets match themselves, as in ``sources[1].x``) on the
    cards ``cards`` (globs of ``preset/method``)."""

    cards: tuple[str, ...]
    key: str
    reason: str

    def covers(self, card: str, key: str) -> bool:
        key_matches = fnmatch.fnmatchcase(key, self.key.replace("[", "[[]"))
        return key_matches and any(fnmatch.fnmatchcase(card, c) for c in self.cards)


def _read(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise DitrError(f"ditr/recipe/{name}: expected a mapping at the top level")
    return data


@cache
def reference_data() -> dict[str, Any]:
    """The parsed ``reference.yaml`` (entries and cards)."""
    data = _read("reference.yaml")
    for section in ("entries", "cards"):
        if not isinstance(data.get(section), dict):
            raise DitrError(f"ditr/recipe/reference.yaml: '{section}' must be a mapping")
    return data


@cache
def entry(name: str) -> Entry:
    """A reference entry with its ``base`` chain resolved (settings inherited, then overridden;
    ``drop`` removes inherited keys that the entry's kind of run does not have)."""
    entries = reference_data()["entries"]
    if name not in entries:
        raise DitrError(f"ditr/recipe/reference.yaml: no entry {name!r} (entries: {sorted(entries)})")
    raw = entries[name]
    settings: dict[str, Any] = dict(entry(raw["base"]).settings) if raw.get("base") else {}
    settings.update(flatten(raw.get("settings") or {}))
    for key in raw.get("drop") or []:
        settings.pop(key, None)
    base_sources = entry(raw["base"]).sources if raw.get("base") else []
    sources = [flatten(s) for s in raw["sources"]] if "sources" in raw else list(base_sources)
    return Entry(name, str(raw.get("config", "")), str(raw.get("reports", "")), settings, sources,
                 [str(n) for n in raw.get("notes") or []])


def card_names() -> list[str]:
    """The presets that have a card (dataset presets, then distillation presets)."""
    return list(reference_data()["cards"])


def card_spec(preset: str, method: str) -> CardSpec:
    """The reference entry that ``preset`` run as ``method`` follows."""
    cards = reference_data()["cards"]
    if method not in METHODS:
        raise DitrError(f"method {method!r}: use one of {METHODS}")
    if preset not in cards:
        raise DitrError(f"preset {preset!r} has no recipe card; presets with one: {', '.join(cards)}")
    methods = cards[preset]
    if method not in methods:
        raise DitrError(f"preset {preset!r} has no {method} recipe in the reference "
                        f"(its cards: {', '.join(methods)})")
    spec = methods[method]
    if isinstance(spec, str):
        spec = {"entry": spec}
    run_preset = spec.get("preset") or (preset if method == "ditr" or preset.startswith("distill/")
                                        else f"{preset} + method/{method}")
    return CardSpec(preset, method, spec["entry"], run_preset, spec.get("config"), spec.get("reports"),
                    spec.get("note"))


def methods_of(preset: str) -> list[str]:
    """The methods ``preset`` has a card for."""
    return list(reference_data()["cards"].get(preset, {}))


@cache
def declared() -> tuple[Declared, ...]:
    """Every declared difference of ``differences.yaml``."""
    data = _read("differences.yaml")
    out = []
    for i, item in enumerate(data.get("differences") or []):
        try:
            cards = item["cards"]
            out.append(Declared(tuple([cards] if isinstance(cards, str) else cards), str(item["key"]),
                                str(item["reason"]).strip()))
        except (KeyError, TypeError) as err:
            raise DitrError(f"ditr/recipe/differences.yaml: differences[{i}] needs cards, key and reason") from err
    return tuple(out)
