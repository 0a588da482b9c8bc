"""2D vision foundation models (DINOv2 / DINOv3) on top of transformers: names, weights, features.

``registry`` maps names to architectures, ``loading`` finds weights offline first, ``checkpoints``
converts Meta's released files, ``backends`` turns images into patch-feature grids and ``extract``
fills the on-disk feature cache (:mod:`ditr.cache`).
"""

from .backends import VFMBackend, resolve_device
from .loading import VFMHandle, load_vfm
from .registry import VFMSpec, get_spec, list_models

__all__ = ["VFMBackend", "VFMHandle", "VFMSpec", "get_spec", "list_models", "load_vfm", "resolve_device"]
