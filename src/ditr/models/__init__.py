"""Point-cloud models: Point Transformer V3 (with optional DITR image injection), the D-DITR student, parts."""

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
from .reference import LoadReport, ReferenceCheckpointError, load_reference_state_dict, manifest_report
from .student import DistillStudent

__all__ = [
    "DistillStudent",
    "Level",
    "LoadReport",
    "Point",
    "PointTransformerV3",
    "PTv3Config",
    "PTv3Segmentor",
    "create_segmentor",
    "get_config",
    "list_configs",
    "load_reference_state_dict",
    "manifest_report",
    "ReferenceCheckpointError",
    "register_config",
]
