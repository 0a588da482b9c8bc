"""ditr: DINO in the Room, 2D foundation-model features for 3D point-cloud segmentation."""

from .errors import DitrError, SceneError
from .scene import Scene, View

__version__ = "0.1.0"
__all__ = ["DitrError", "Scene", "SceneError", "View", "__version__"]
