"""Point-cloud models: Point Transformer V3 (with optional DITR image injection) and its parts."""

from .checkpoint import (
    CheckpointError,
    LoadReport,
    load_checkpoint,
    load_reference_state_dict,
    manifest_report,
    save_checkpoint,
)
from .point import Level, Point
from .ptv3 import (
    PointTransformerV3,
    PTv3Config,
    PTv3Segmentor,
    create_segmentor,
    get_config,
    list_configs,
    register_config,
)

__all__ = [
    "CheckpointError",
    "Level",
    "LoadReport",
    "Point",
    "PointTransformerV3",
    "PTv3Config",
    "PTv3Segmentor",
    "create_segmentor",
    "get_config",
    "list_configs",
    "load_checkpoint",
    "load_reference_state_dict",
    "manifest_report",
    "register_config",
    "save_checkpoint",
]
