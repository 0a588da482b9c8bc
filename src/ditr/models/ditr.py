"""DITR: a PTv3 segmentor whose decoder receives per-point 2D foundation-model features.

See docs/design.md#injection-into-the-decoder.

The data pipeline hands over, per batch, a table of patch features (``img_table``, one row per patch
cell of every view, from the feature cache) or the network inputs of the views (``images``, when the
VFM runs online with image augmentation), plus per point the cells to read (``img_index``,
``img_weight``, ``img_seen``). The model turns them into (N, D) point features on its own device and
the backbone max-pools them with its own clusters and adds them to every decoder skip connection.
State-dict keys stay those of the reference (``backbone.*``, ``seg_head.*``) so its checkpoints load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import DitrError
from ..image_features import batch_image_table
from ..lifting import lookup_image_features
from .ptv3 import PTv3Config, PTv3Segmentor

MISSING_MODES = ("zeros", "learned")


class DITRSegmentor(PTv3Segmentor):
    """PTv3 + image-feature injection; ``missing="learned"`` gives unseen points a learned feature.

    ``vfm`` (an online :class:`~ditr.image_features.ImageFeatureSource` with its frozen VFM, not
    part of the state dict) is needed only when batches carry ``images`` instead of a cached
    ``img_table``.
    """

    def __init__(self, config: PTv3Config, num_classes: int, missing: str = "zeros", vfm: Any = None) -> None:
        if config.image_channels is None:
            raise DitrError("a DITR model needs model.image_channels (the VFM's feature width)")
        if missing not in MISSING_MODES:
            raise DitrError(f"model.injection.missing must be one of {MISSING_MODES}, not {missing!r}")
        super().__init__(config, num_classes)
        self.missing_embedding = nn.Parameter(torch.zeros(config.image_channels)) if missing == "learned" else None
        self.vfm = vfm

    def image_table(self, batch: Mapping[str, Any]) -> Tensor:
        """The batch's (M, D) patch-feature table: cached, or computed now by the online VFM."""
        return batch_image_table(batch, self.vfm, "DITR model")

    def image_features(self, batch: Mapping[str, Any]) -> Tensor:
        device = self.seg_head.weight.device
        table = self.image_table(batch).to(device)
        feat = lookup_image_features(table, batch["img_index"].to(device), batch["img_weight"].to(device))
        if self.missing_embedding is not None:
            seen = batch["img_seen"].to(device)[:, None]
            feat = torch.where(seen, feat, self.missing_embedding.to(feat.dtype))
        return feat

    # A batch dict only (its image tables and indices), not a prebuilt Point as PTv3Segmentor also takes.
    def forward(self, data: Mapping[str, Any]) -> Tensor:  # type: ignore[override]
        if "image_feat" not in data:
            data = {**data, "image_feat": self.image_features(data)}
        return super().forward(data)
