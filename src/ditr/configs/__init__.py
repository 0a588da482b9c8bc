"""The YAML presets shipped with ditr (docs/design.md#method), found by name wherever ditr is installed.

``load_preset(["scannet", "method/ptv3"], ["optim.lr=0.001"])`` merges the named presets in order
(a name is a file of this directory without ``.yaml``; a path to any YAML file works too) and
applies the overrides, with the validation of :func:`ditr.data.config.load_config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DitrError

PRESET_DIR = Path(__file__).resolve().parent


def list_presets() -> list[str]:
    return sorted(str(p.relative_to(PRESET_DIR).with_suffix("")) for p in PRESET_DIR.rglob("*.yaml"))


def preset_path(name: str | Path) -> Path:
    """A preset name (``scannet``, ``method/ptv3``) or an existing YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    packaged = PRESET_DIR / f"{name}.yaml"
    if packaged.is_file():
        return packaged
    raise DitrError(f"{name}: neither a YAML file nor a preset; presets: {', '.join(list_presets())}")


def load_preset(names: Sequence[str | Path], overrides: Sequence[str] = ()) -> dict[str, Any]:
    from ..data.config import load_config

    return load_config([preset_path(n) for n in names], overrides)
