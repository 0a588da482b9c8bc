"""Data pipeline: scene datasets, transforms that keep point-pixel correspondences, collate, configs."""

from .collate import collate
from .config import ConfigError, load_config
from .dataset import SceneDataset, input_channels, resolve_scenes
from .transforms import TRANSFORMS, Compose, build_transforms

__all__ = ["TRANSFORMS", "Compose", "ConfigError", "SceneDataset", "build_transforms", "collate",
           "input_channels", "load_config", "resolve_scenes"]
