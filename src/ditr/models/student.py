"""The D-DITR distillation student: a 3D-only PTv3 with a head to the teacher's feature width
(docs/design.md#d-ditr-distillation).

It lives with the models, not with the distillation workflow (:mod:`ditr.distill`), because the
model builder makes it from a run config like any other model and a fine-tuned segmentor loads its
``backbone.*`` weights; its loss is :func:`ditr.engine.losses.cosine_distill_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ..errors import DitrError
from .ptv3 import PointTransformerV3, PTv3Config


class DistillStudent(nn.Module):
    """A 3D-only PTv3 whose final decoder features are mapped to the teacher's width.

    ``forward(batch) -> {"pred": (N, D)}``. State-dict keys: ``backbone.*`` (those of
    :class:`~ditr.models.ptv3.PTv3Segmentor`, so a segmentor fine-tunes from them) and
    ``distill_head.*`` (dropped at fine-tuning).
    """

    def __init__(self, config: PTv3Config, head_channels: int) -> None:
        super().__init__()
        if config.image_channels is not None:
            raise DitrError("the D-DITR student takes no image input (model.image_channels must be null)")
        self.backbone = PointTransformerV3(config)
        self.distill_head = nn.Linear(self.backbone.config.out_channels, int(head_channels))

    @property
    def config(self) -> PTv3Config:
        return self.backbone.config

    def forward(self, data: Mapping[str, Any]) -> dict[str, Tensor]:
        point = self.backbone({k: v for k, v in data.items() if k != "image_feat"})
        return {"pred": self.distill_head(point.feat)}
