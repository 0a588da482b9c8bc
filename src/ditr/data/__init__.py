"""Data pipeline: scene datasets, transforms that keep point-pixel correspondences, collate, configs."""

from .collate import collate
from .config import ConfigError, load_config
from .dataset import SceneDataset, input_channels, resolve_scenes
from .image_lookup import build_lookup, image_table_from_grids, lookup_image_features
from .transforms import TRANSFORMS, Compose, build_transforms

__all__ = ["TRANSFORMS", "Compose", "ConfigError", "SceneDataset", "build_lookup", "build_transforms", "collate",
           "image_table_from_grids", "input_channels", "load_config", "lookup_image_features", "resolve_scenes"]
