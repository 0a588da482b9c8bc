"""Data pipeline: scene datasets, transforms that keep point-pixel correspondences, collate."""

from .collate import collate
from .dataset import SceneDataset, resolve_scenes
from .image_lookup import build_lookup, image_table_from_grids, lookup_image_features
from .transforms import TRANSFORMS, Compose, build_transforms

__all__ = ["TRANSFORMS", "Compose", "SceneDataset", "build_lookup", "build_transforms", "collate",
           "image_table_from_grids", "lookup_image_features", "resolve_scenes"]
