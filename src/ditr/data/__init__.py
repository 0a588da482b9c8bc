"""Data pipeline: scene datasets, transforms that keep point-pixel correspondences, collate."""

from .collate import collate
from .dataset import SceneDataset, resolve_scenes
from .transforms import TRANSFORMS, Compose, build_transforms

__all__ = ["TRANSFORMS", "Compose", "SceneDataset", "build_transforms", "collate", "resolve_scenes"]
