"""Run configurations: the typed :class:`RunConfig` and the YAML presets shipped with ditr.

``load_preset(["scannet", "method/ptv3"], ["optim.lr=0.001"])`` merges the named presets in order
(a name is a file of this directory without ``.yaml``; a path to any YAML file works too), applies
the overrides and returns the checked, typed :class:`RunConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import DitrError
from .run import (INPUT_FEATURES, DatasetConfig, DistillConfig, ImagesConfig, InjectionConfig, ModelConfig,
                  ModelKind, RunConfig, VFMConfig, input_channels, load_config)

PRESET_DIR = Path(__file__).resolve().parent

__all__ = ["INPUT_FEATURES", "DatasetConfig", "DistillConfig", "ImagesConfig", "InjectionConfig", "ModelConfig",
           "ModelKind", "RunConfig", "VFMConfig", "input_channels", "list_presets", "load_config", "load_preset",
           "preset_path"]


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


def load_preset(names: Sequence[str | Path], overrides: Sequence[str] = ()) -> RunConfig:
    """The typed run config of presets / YAML files merged in order, plus ``key=value`` overrides."""
    return load_config([str(preset_path(n)) for n in names], overrides)
