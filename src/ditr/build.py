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

from .data import input_channels
from .errors import DitrError
from .models.ditr import DITRSegmentor
from .models.ptv3 import PTv3Segmentor, get_config
from .models.student import DistillStudent

#: ``model.name`` of the D-DITR distillation student.
STUDENT = "d-ditr"


def needs_images(config: Mapping[str, Any]) -> bool:
    """Whether a model trained with this config reads images (DITR) or not (PTv3, D-DITR)."""
    return config.get("model", {}).get("name", "ditr") == "ditr"


def head_channels(config: Mapping[str, Any]) -> int:
    """D of the distillation head: ``distill.head_channels``, else ``model.image_channels``."""
    d = (config.get("distill") or {}).get("head_channels") or (config.get("model") or {}).get("image_channels")
    if not d:
        raise DitrError("distill.head_channels is not set (the teacher's feature width, e.g. 1024 for ViT-L)")
    return int(d)


def build_model(config: Mapping[str, Any], in_channels: int, num_classes: int, vfm: Any = None) -> nn.Module:
    """The model a run config asks for: ``model.name`` ``ptv3`` (3D only), ``ditr`` or ``d-ditr`` (student).

    ``model.backbone`` names a registered PTv3 config (``scannet``, ``tiny`` ...), ``model.ptv3``
    overrides its fields, and ``model.injection`` sets the DITR options (``stages``: which decoder
    stages receive image features, ``pool_reduce``, ``dropout``, ``missing``).
    """
    model_cfg = dict(config.get("model", {}))
    name = model_cfg.get("name", "ditr")
    injection = dict(model_cfg.get("injection") or {})
    overrides = dict(model_cfg.get("ptv3") or {})
    backbone, _ = get_config(model_cfg.get("backbone", "scannet"), **overrides)
    backbone = dataclasses.replace(backbone, in_channels=in_channels)
    if name == "ptv3":
        return PTv3Segmentor(dataclasses.replace(backbone, image_channels=None), num_classes)
    if name == STUDENT:  # the distillation student (ditr.distill): 3D only, Linear(out -> D) head
        return DistillStudent(dataclasses.replace(backbone, image_channels=None), head_channels(config))
    if name != "ditr":
        raise DitrError(f"model.name must be ptv3, ditr or d-ditr, not {name!r}")
    backbone = dataclasses.replace(
        backbone,
        image_channels=model_cfg.get("image_channels") or backbone.image_channels,
        image_reduce=injection.get("pool_reduce", backbone.image_reduce),
        image_dropout=injection.get("dropout", backbone.image_dropout),
        image_stages=tuple(injection["stages"]) if injection.get("stages") is not None else None,
    )
    return DITRSegmentor(backbone, num_classes, missing=injection.get("missing", "zeros"), vfm=vfm)


def _vfm_backend(config: Mapping[str, Any]) -> Any:
    """The frozen VFM for runs whose features are computed online (``vfm.online``)."""
    vfm = config.get("vfm", {})
    if not (needs_images(config) and vfm.get("online")):
        return None
    from .vfm import VFMBackend, load_vfm

    handle = load_vfm(vfm["model"], vfm.get("checkpoint"), allow_download=bool(vfm.get("download", False)))
    # The model's own device: vfm.device is where the data workers prepare images (the CPU).
    return VFMBackend(handle, device="auto", precision=vfm.get("precision", "auto"),
                      pos_interpolation=vfm.get("pos_interpolation", "antialias"))


def model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """The model of a run config, its input width and classes read from ``dataset``, VFM attached if online."""
    data = config.get("dataset", {})
    num_classes = data.get("num_classes")
    if not num_classes:
        raise DitrError("dataset.num_classes is not set")
    channels = input_channels(data.get("input_features", ["color", "normal"]))
    return build_model(config, channels, int(num_classes), vfm=_vfm_backend(config))
