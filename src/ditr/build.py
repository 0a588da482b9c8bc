"""From a run configuration to a model: the network ``model.name`` asks for, sized and wired.

This is workflow-level code: it reads the run config (``model``, ``dataset.input_features``,
``dataset.num_classes``, ``distill.head_channels``, ``vfm``) and may load the frozen VFM, so it
sits above :mod:`ditr.models`, which only defines the networks and knows nothing about configs,
data or VFM loading. Training, distillation, evaluation, prediction, ``ditr info`` and every
model-file reader (:mod:`ditr.model_files`) build their models here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from .configs import ModelKind, RunConfig
from .errors import DitrError
from .image_features import ImageFeatureSource
from .models.ditr import DITRSegmentor
from .models.ptv3 import PTv3Segmentor, get_config
from .models.student import DistillStudent


def head_channels(config: RunConfig) -> int:
    """D of the distillation head: ``distill.head_channels``, else ``model.image_channels``."""
    d = config.distill.head_channels or config.model.image_channels
    if not d:
        raise DitrError("distill.head_channels is not set (the teacher's feature width, e.g. 1024 for ViT-L)")
    return int(d)


def build_model(config: RunConfig | Mapping[str, Any], in_channels: int, num_classes: int,
                vfm: Any = None) -> nn.Module:
    """The model a run config asks for: ``model.name`` ``ptv3`` (3D only), ``ditr`` or ``d-ditr`` (student).

    ``model.backbone`` names a registered PTv3 config (``scannet``, ``tiny`` ...), ``model.ptv3``
    overrides its fields, and ``model.injection`` sets the DITR options (``stages``: which decoder
    stages receive image features, ``pool_reduce``, ``dropout``, ``missing``).
    """
    config = RunConfig.coerce(config)
    model_cfg = config.model
    injection = model_cfg.injection
    backbone, _ = get_config(model_cfg.backbone, **model_cfg.ptv3)
    backbone = dataclasses.replace(backbone, in_channels=in_channels)
    if model_cfg.kind is ModelKind.PTV3:
        return PTv3Segmentor(dataclasses.replace(backbone, image_channels=None), num_classes)
    if model_cfg.kind is ModelKind.D_DITR:  # the distillation student: 3D only, Linear(out -> D) head
        return DistillStudent(dataclasses.replace(backbone, image_channels=None), head_channels(config))
    backbone = dataclasses.replace(
        backbone,
        image_channels=model_cfg.image_channels or backbone.image_channels,
        image_reduce=injection.pool_reduce,
        image_dropout=injection.dropout,
        image_stages=tuple(injection.stages) if injection.stages is not None else None,
    )
    return DITRSegmentor(backbone, num_classes, missing=injection.missing, vfm=vfm)


def _vfm_backend(config: RunConfig) -> ImageFeatureSource | None:
    """The frozen VFM (an online image-feature source, run on ``vfm.device``) for DITR runs whose
    features are computed online (``vfm.online``)."""
    vfm = config.vfm
    if not (config.kind.needs_images_at_inference and vfm.online):
        return None
    return ImageFeatureSource(dataclasses.asdict(vfm), config.images.resolution, device=vfm.device,
                              preprocess_device=vfm.preprocess_device)


def model_from_config(config: RunConfig | Mapping[str, Any]) -> nn.Module:
    """The model of a run config, its input width and classes read from ``dataset``, VFM attached if online."""
    config = RunConfig.coerce(config)
    return build_model(config, config.dataset.in_channels, config.num_classes(), vfm=_vfm_backend(config))
