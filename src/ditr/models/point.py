"""The point carrier: one batch of clouds and its whole pooling hierarchy.

PTv3 pools a cloud several times and later stages need the clusters of earlier ones (unpooling,
DITR's per-level image features, distillation heads on the finest decoder output). Instead of
recomputing them, every level is kept in :class:`Level` and each pooled level remembers how its
parent's points map onto its clusters.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .serialization import argsort_codes, encode, serialization_depth


def offset_to_batch(offset: Tensor) -> Tensor:
    """Cloud index of every point from cumulative counts ``offset`` (B,)."""
    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    return torch.repeat_interleave(torch.arange(len(offset), device=offset.device), counts)


def batch_to_offset(batch: Tensor, num_clouds: int | None = None) -> Tensor:
    """Cumulative counts from per-point cloud indices (points must be grouped by cloud)."""
    counts = torch.bincount(batch, minlength=num_clouds or 0)
    return torch.cumsum(counts, 0)


@dataclass(eq=False)
class Level:
    """Points of one resolution level with their serializations.

    ``code``/``order``/``inverse`` have one row per serialization order; ``orders`` names the rows
    (the reference may permute them at every pooling). ``input_feat`` is the network input (level
    0 only). ``pooling_inverse`` maps every point of the
    finer parent level to its cluster here, so features of the parent can be pooled (``scatter``)
    or this level's features broadcast back (``feat[pooling_inverse]``).
    """

    grid_coord: Tensor
    batch: Tensor
    offset: Tensor
    depth: int
    code: Tensor
    order: Tensor
    inverse: Tensor
    orders: tuple[str, ...]
    coord: Tensor | None = None
    input_feat: Tensor | None = None
    pooling_inverse: Tensor | None = None
    image_feat: Tensor | None = None
    enc_feat: Tensor | None = None
    dec_feat: Tensor | None = None
    cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return int(self.grid_coord.shape[0])

    def counts(self) -> Tensor:
        """Points per cloud."""
        return torch.diff(self.offset, prepend=self.offset.new_zeros(1))


@dataclass(eq=False)
class Point:
    """A batch flowing through the network: current features and every level reached so far.

    ``levels[0]`` is the input resolution; ``level`` is the index of the level that ``feat``
    currently lives on. After a forward pass, ``levels[s].enc_feat`` holds the encoder output of
    level s, ``levels[s].dec_feat`` the decoder output and ``levels[s].image_feat`` the (pooled)
    per-point image features used by DITR.
    """

    feat: Tensor
    levels: list[Level]
    level: int = 0

    @property
    def current(self) -> Level:
        return self.levels[self.level]

    @classmethod
    def from_batch(
        cls,
        grid_coord: Tensor,
        feat: Tensor,
        offset: Tensor | None = None,
        batch: Tensor | None = None,
        *,
        orders: tuple[str, ...] = ("z", "z-trans", "hilbert", "hilbert-trans"),
        depth: int | None = None,
        depth_formula: str = "pointcept",
        coord: Tensor | None = None,
        image_feat: Tensor | None = None,
    ) -> Point:
        """Serialize a batch of voxelised clouds.

        Give ``offset`` (cumulative counts, points grouped by cloud) or ``batch`` (cloud index per
        point). Coordinates must be non-negative voxel indices; the depth is computed over the
        whole batch as in the reference unless given.
        """
        if offset is None and batch is None:
            offset = torch.tensor([grid_coord.shape[0]], device=grid_coord.device)
        if batch is None:
            assert offset is not None  # set above when neither was given
            batch = offset_to_batch(offset.long())
        if offset is None:
            offset = batch_to_offset(batch.long())
        if grid_coord.ndim != 2 or grid_coord.shape[1] != 3:
            raise ValueError(f"grid_coord must be (N, 3), got {tuple(grid_coord.shape)}")
        if feat.shape[0] != grid_coord.shape[0] or batch.shape[0] != grid_coord.shape[0]:
            raise ValueError("grid_coord, feat and batch must have the same number of points")
        if grid_coord.numel() and int(grid_coord.min()) < 0:
            raise ValueError("grid_coord must be non-negative voxel indices")
        grid_coord = grid_coord.long()
        batch = batch.long()
        if depth is None:
            depth = serialization_depth(grid_coord, depth_formula)
        if 3 * depth + int(len(offset)).bit_length() > 63:
            raise ValueError("serialization code would overflow int64; reduce grid extent or batch")
        code = torch.stack([encode(grid_coord, batch, depth, o) for o in orders])
        order, inverse = argsort_codes(code)
        level = Level(
            grid_coord=grid_coord,
            batch=batch,
            offset=offset.long(),
            depth=depth,
            code=code,
            order=order,
            inverse=inverse,
            orders=tuple(orders),
            coord=coord,
            input_feat=feat,
            image_feat=image_feat,
        )
        return cls(feat=feat, levels=[level])

    @classmethod
    def from_dict(cls, data: Mapping[str, Tensor], **kwargs: Any) -> Point:
        """Build from a dict with ``grid_coord``, ``feat`` and ``offset`` or ``batch`` (+ optional
        ``coord``, ``image_feat``), the layout used by data loaders."""
        return cls.from_batch(
            data["grid_coord"],
            data["feat"],
            offset=data.get("offset"),
            batch=data.get("batch"),
            coord=data.get("coord"),
            image_feat=data.get("image_feat"),
            **kwargs,
        )

    def fresh(self) -> Point:
        """A new carrier holding only this one's input level (a shallow copy of it, sharing the
        neighbour/patch caches), so a forward pass never alters what the caller passed in."""
        feat = self.levels[0].input_feat
        assert feat is not None  # level 0 keeps the network input (from_dict)
        return Point(feat=feat, levels=[dataclasses.replace(self.levels[0])])

    def permute_orders(self, perm: Tensor) -> None:
        """Reorder the serialization rows of the current level (order shuffling).

        The level is replaced by a copy, so a caller's level is not reordered behind its back;
        the caches stay shared because they do not depend on the row order.
        """
        lv = self.current
        self.levels[self.level] = dataclasses.replace(
            lv, code=lv.code[perm], order=lv.order[perm], inverse=lv.inverse[perm],
            orders=tuple(lv.orders[int(i)] for i in perm),
        )
