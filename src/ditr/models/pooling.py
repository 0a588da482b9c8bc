"""Serialized pooling and unpooling between PTv3 levels.

Pooling groups the points of one level by their serialization code with the lowest ``3 * log2(stride)``
bits dropped, which is exactly the set of points sharing a ``stride^3`` voxel cell. The new level
keeps the (shifted) codes of its cluster heads, so it does not need re-encoding, and records the
parent -> cluster map used later by unpooling and by DITR's image-feature pooling.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .point import Level, Point, batch_to_offset
from .serialization import argsort_codes

REDUCTIONS = {"max": "amax", "mean": "mean", "sum": "sum", "min": "amin"}


def _bn(channels: int) -> nn.BatchNorm1d:
    """BatchNorm as configured throughout PTv3 (eps 1e-3, momentum 0.01)."""
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


def segment_reduce(x: Tensor, cluster: Tensor, num_clusters: int, reduce: str) -> Tensor:
    """Reduce rows of ``x`` over ``cluster`` ids (every cluster non-empty) with torch built-ins."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduce {reduce!r}; expected one of {tuple(REDUCTIONS)}")
    out = x.new_zeros(num_clusters, x.shape[1])
    index = cluster[:, None].expand(-1, x.shape[1])
    return out.scatter_reduce(0, index, x, REDUCTIONS[reduce], include_self=False)


def pool_level(parent: Level, stride: int = 2) -> Level:
    """Build the next-coarser level by clustering on serialization row 0.

    Clusters (and therefore the new level's point order) follow ascending row-0 code. Returns the
    new level with ``pooling_inverse`` set; features are pooled by the caller.
    """
    shift = math.ceil(math.log2(stride))
    code = parent.code >> (3 * shift)
    cells, cluster = torch.unique(code[0], sorted=True, return_inverse=True)
    num = len(cells)
    head = torch.empty(num, dtype=torch.long, device=code.device)
    head.scatter_(0, cluster, torch.arange(cluster.numel(), device=code.device))
    code = code[:, head]
    order, inverse = argsort_codes(code)
    batch = parent.batch[head]
    coord = None
    if parent.coord is not None:
        coord = segment_reduce(parent.coord, cluster, num, "mean")
    return Level(
        grid_coord=parent.grid_coord[head] >> shift,
        batch=batch,
        offset=batch_to_offset(batch, len(parent.offset)),
        depth=parent.depth - shift,
        code=code,
        order=order,
        inverse=inverse,
        orders=parent.orders,
        coord=coord,
        pooling_inverse=cluster,
    )


class SerializedPooling(nn.Module):
    """``GELU(BN(reduce_cluster(Linear(x))))`` onto a new level; names match the reference."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2, reduce: str = "max") -> None:
        super().__init__()
        if stride < 2 or stride & (stride - 1):
            raise ValueError("pooling stride must be a power of two >= 2")
        self.stride, self.reduce = stride, reduce
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = nn.Sequential(_bn(out_channels))
        self.act = nn.Sequential(nn.GELU())

    def extra_repr(self) -> str:
        return f"stride={self.stride}, reduce={self.reduce!r}"

    def forward(self, point: Point, image_reduce: str | None = None) -> Point:
        """Append the pooled level to ``point`` and move ``point.feat`` onto it.

        When the current level carries image features they are reduced over the same clusters
        (``image_reduce``, default: the feature reduce), without projection, as DITR does.
        """
        parent = point.current
        level = pool_level(parent, self.stride)
        cluster, num = level.pooling_inverse, level.num_points
        assert cluster is not None  # pool_level sets it
        feat = segment_reduce(self.proj(point.feat), cluster, num, self.reduce)
        if parent.image_feat is not None:
            level.image_feat = segment_reduce(parent.image_feat, cluster, num, image_reduce or self.reduce)
        del point.levels[point.level + 1 :]
        point.levels.append(level)
        point.level += 1
        point.feat = self.act(self.norm(feat))
        return point


class SerializedUnpooling(nn.Module):
    """Back to the parent level: ``GELU(BN(Linear(skip))) + GELU(BN(Linear(x)))[inverse]``.

    With ``image_channels`` set (DITR), ``GELU(BN(Linear(Dropout1d(image_feat))))`` of the parent
    level's (pooled) image features is added as well; the keys ``proj_image_feat.1/.2`` match the
    DITR checkpoints. Dropout1d on an (N, D) matrix drops whole points' image features.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        image_channels: int | None = None,
        image_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_channels, out_channels), _bn(out_channels), nn.GELU())
        self.proj_skip = nn.Sequential(nn.Linear(skip_channels, out_channels), _bn(out_channels), nn.GELU())
        self.proj_image_feat = None
        if image_channels is not None:
            self.proj_image_feat = nn.Sequential(
                nn.Dropout1d(image_dropout), nn.Linear(image_channels, out_channels), _bn(out_channels), nn.GELU()
            )

    def forward(self, point: Point) -> tuple[Point, Tensor]:
        """Move ``point`` to the parent level; returns it and the projected skip features."""
        coarse = point.current
        parent = point.levels[point.level - 1]
        if parent.enc_feat is None:
            raise RuntimeError("unpooling needs the encoder output of the parent level")
        skip = self.proj_skip(parent.enc_feat)
        fused = skip + self.proj(point.feat).index_select(0, coarse.pooling_inverse)
        if self.proj_image_feat is not None:
            if parent.image_feat is None:
                raise ValueError("this model was built with image features; pass image_feat with the input")
            fused = fused + self.proj_image_feat(parent.image_feat)
        point.level -= 1
        point.feat = fused
        return point, skip
