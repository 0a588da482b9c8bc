"""A preset's recipe card: its resolved configuration next to the reference's, key by key.

Every key the reference entry names is compared; a key where ours differs must have a declared
reason (``differences.yaml``), else the card marks it undeclared (and the test suite fails). The
comparison is of what the run does, so the view of a configuration resolves what the raw keys only
name: the backbone's fields (``model.backbone`` + ``model.ptv3`` + the input width) and the image
flip (an ``ImageFlip`` step in our train list; the reference flips images before its 3D steps,
which do not interact with it) become ``model.ptv3.*`` and ``images.flip_p``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..configs import RunConfig, load_preset
from ..models.ptv3 import get_config
from .reference import IMAGE_KEY_PREFIXES, CardSpec, card_spec, declared, entry, flatten, methods_of

#: Card statuses: equal, different with a declared reason, different without one.
SAME, DECLARED, UNDECLARED = "same", "declared", "undeclared"


def config_view(config: RunConfig) -> dict[str, Any]:
    """The configuration as the card compares it: dotted keys, the backbone resolved, the image flip
    as ``images.flip_p``."""
    tree = config.to_dict()
    train = tree["transforms"]["train"] or []
    flips = [t for t in train if t.get("type") == "ImageFlip"]
    tree["transforms"]["train"] = [t for t in train if t.get("type") != "ImageFlip"]
    view = flatten(tree)
    view["images.flip_p"] = float(flips[0].get("p", 0.5)) if flips else 0.0
    backbone, _ = get_config(config.model.backbone, **config.model.ptv3)
    backbone = dataclasses.replace(backbone, in_channels=config.dataset.in_channels)
    for f in dataclasses.fields(backbone):
        value = getattr(backbone, f.name)
        view[f"model.ptv3.{f.name}"] = list(value) if isinstance(value, tuple) else value
    return view


def same(a: Any, b: Any) -> bool:
    """Equal as settings: numbers by value (1 == 1.0), sequences element-wise, a key missing from one
    mapping equal to null / false in the other."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (a in (None, False) and b in (None, False))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return all(same(a.get(k), b.get(k)) for k in set(a) | set(b))
    return a == b


@dataclass
class Row:
    """One compared key."""

    key: str
    ours: Any
    reference: Any
    status: str
    reason: str = ""


@dataclass
class Card:
    """The comparison of one preset and method with the reference entry it follows."""

    spec: CardSpec
    config: RunConfig
    rows: list[Row]
    entry_config: str
    reports: str
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.spec.preset}/{self.spec.method}"

    @property
    def differences(self) -> list[Row]:
        return [r for r in self.rows if r.status != SAME]

    @property
    def undeclared(self) -> list[Row]:
        return [r for r in self.rows if r.status == UNDECLARED]

    def to_json(self) -> dict[str, Any]:
        """``{"preset", "method", "runs", "follows", "config", "differences": [{key, ours, reference, reason}]}``."""
        return {
            "preset": self.spec.preset, "method": self.spec.method, "runs": self.spec.run_preset,
            "follows": {"entry": self.spec.entry, "config": self.entry_config, "reports": self.reports,
                        "note": self.spec.note},
            "config": self.config.to_dict(),
            "differences": [{"key": r.key, "ours": r.ours, "reference": r.reference, "reason": r.reason or None}
                            for r in self.differences],
        }


def _run_config(spec: CardSpec, overrides: Sequence[str]) -> RunConfig:
    """The configuration ``ditr train`` / ``ditr distill`` would run for this card."""
    if spec.run_preset != spec.preset and not spec.run_preset.startswith("distill/"):
        return load_preset([spec.preset, f"method/{spec.method}"], overrides)
    return load_preset([spec.run_preset], overrides)


def _source_views(config: RunConfig) -> list[dict[str, Any]]:
    """The views of a distillation run's extra sources (after the first, which is the run's own data)."""
    from ..distill import source_configs

    return [config_view(s) for s in source_configs(config)[1:]]


def _compare(card: str, ours: dict[str, Any], reference: dict[str, Any], prefix: str = "") -> list[Row]:
    rules = declared()
    rows = []
    for key, ref in reference.items():
        name = prefix + key
        value = ours.get(key)
        if same(value, ref):
            rows.append(Row(name, value, ref, SAME))
            continue
        reason = next((d.reason for d in rules if d.covers(card, name)), "")
        rows.append(Row(name, value, ref, DECLARED if reason else UNDECLARED, reason))
    return rows


def build_card(preset: str, method: str | None = None, overrides: Sequence[str] = ()) -> Card:
    """The recipe card of ``preset`` run as ``method`` (default: the preset's own method), with
    ``key=value`` ``overrides`` applied as on the ``ditr train`` command line."""
    if method is None:
        methods = methods_of(preset)
        own = load_preset([preset]).kind.value if methods else "ditr"
        method = own if own in methods or not methods else methods[0]
    spec = card_spec(preset, method)
    ref = entry(spec.entry)
    settings = dict(ref.settings)
    if method == "ptv3":  # the reference's base config: the image entry without images
        settings = {k: v for k, v in settings.items() if not k.startswith(IMAGE_KEY_PREFIXES)}
        settings["model.name"] = "ptv3"
    config = _run_config(spec, overrides)
    name = f"{preset}/{method}"
    rows = _compare(name, config_view(config), settings)
    if method == "d-ditr" and ref.sources:
        views = _source_views(config)
        for i, source in enumerate(ref.sources):
            ours = views[i] if i < len(views) else {}
            rows += _compare(name, ours, source, prefix=f"sources[{i + 1}].")
    return Card(spec, config, rows, spec.config or ref.config, spec.reports or ref.reports, ref.notes)

