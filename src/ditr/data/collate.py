"""Batches in the offset layout of point-cloud networks: points of all samples concatenated.

``offset`` holds cumulative point counts per cloud (the last entry is the batch's point count).
Image-feature tables are concatenated too, and each sample's ``img_index`` is shifted by the
cells of the samples before it, so ``lookup_image_features(img_table, img_index, img_weight)``
works on the whole batch at once. A sample without views (no camera saw its scene) has no cells:
its indices (all with weight 0) are set to 0 rather than shifted, so they stay inside the table
whatever the order of the samples.

Mix3D (docs/design.md#training-recipe) happens here, as in the reference: two consecutive samples, each augmented on
its own, become ONE cloud by dropping the offset between them. Each half keeps its own views: its
points index only its own cells of the table, so a point of one half never sees the other half's
images. Whether a pair is mixed was drawn by the dataset with the first sample's generator
(``sample["mix3d"]``), so batches are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

PER_POINT = ("coord", "grid_coord", "feat", "segment", "index", "img_weight", "img_seen")


def _pad_columns(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """(N_i, K_i) -> (N_i, max K) with zero padding ('mean' lookups of samples with fewer views)."""
    k = max(t.shape[1] for t in tensors)
    return [torch.nn.functional.pad(t, (0, k - t.shape[1])) for t in tensors]


def mixed_offsets(counts: torch.Tensor, mix: Sequence[bool]) -> torch.Tensor:
    """Cloud offsets after merging pairs (2i, 2i + 1) whose first sample asks for Mix3D."""
    ends = torch.cumsum(counts, 0)
    keep = torch.ones(len(counts), dtype=torch.bool)
    for i in range(0, len(counts) - 1, 2):  # a loop over samples of the batch, not points
        if mix[i]:
            keep[i] = False
    return ends[keep]


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate samples (dicts from :class:`~ditr.data.dataset.SceneDataset`) into one batch.

    Keys: ``offset`` (B,) int64; per point ``coord``, ``grid_coord``, ``feat``, ``segment``
    (+ ``index``); images: ``img_table`` (sum M_i, D), ``img_index`` (N, K) shifted,
    ``img_weight``, ``img_seen``, ``view_flipped`` / ``view_valid`` (sum V_i,), ``images`` (online
    VFM); evaluation: ``inverse`` shifted by the point offsets and ``origin_segment``; metadata
    ``name`` and ``view_names`` (lists per sample), ``num_views`` (per sample), ``sample_offset``
    (cumulative points per sample; equals ``offset`` unless Mix3D merged samples).
    """
    batch: dict[str, Any] = {}
    counts = torch.tensor([s["coord"].shape[0] for s in samples], dtype=torch.int64)
    point_start = torch.cumsum(counts, 0) - counts
    for key in PER_POINT:
        if key in samples[0]:
            parts = [s[key] for s in samples]
            batch[key] = torch.cat(_pad_columns(parts) if key == "img_weight" else parts)
    if "img_index" in samples[0]:
        cells = torch.tensor([s["num_cells"] for s in samples], dtype=torch.int64)
        cell_start = torch.cumsum(cells, 0) - cells
        batch["img_index"] = torch.cat(_pad_columns([s["img_index"] + c if s["num_cells"] else
                                                     torch.zeros_like(s["img_index"])
                                                     for s, c in zip(samples, cell_start)]))
        batch["num_views"] = torch.tensor([len(s["view_flipped"]) for s in samples], dtype=torch.int64)
        for key in ("view_flipped", "view_valid"):
            batch[key] = torch.cat([s[key] for s in samples])
        batch["view_names"] = [s["view_names"] for s in samples]
    for key in ("img_table", "images"):
        if any(key in s for s in samples):
            batch[key] = torch.cat([s[key] for s in samples if key in s])
    if "inverse" in samples[0]:
        batch["inverse"] = torch.cat([s["inverse"] + p for s, p in zip(samples, point_start)])
        batch["origin_segment"] = torch.cat([s["origin_segment"] for s in samples])
    batch["sample_offset"] = torch.cumsum(counts, 0)
    batch["offset"] = mixed_offsets(counts, [bool(s.get("mix3d", False)) for s in samples])
    batch["name"] = [s["name"] for s in samples]
    return batch
