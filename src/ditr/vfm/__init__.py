"""2D vision foundation models (DINOv2 / DINOv3) on top of transformers: names, weights, features.

``registry`` maps names to architectures, ``loading`` finds weights offline first, ``checkpoints``
converts Meta's released files, ``backends`` turns images into patch-feature grids and ``extract``
fills the on-disk feature cache (:mod:`ditr.cache`).

The names below load on first use: torch and transformers take seconds to import, and the command
line only needs the light registry to build its help.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"VFMBackend": "backends", "build_backend": "backends", "resolve_device": "backends",
            "VFMHandle": "loading", "load_vfm": "loading",
            "VFMSpec": "registry", "get_spec": "registry", "list_models": "registry"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
