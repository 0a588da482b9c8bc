"""Per-point image features: each point takes the patch feature of the view(s) that see it.

For a view of original size (H, W) whose feature grid is (D, h, w) (the image was resized to
(h p, w p)), a point at pixel (u, v) falls in patch ``row = floor(v h / H)``, ``col = floor(u w / W)``
(docs/design.md#point-to-patch-lookup: nearest patch, no upsampling). A horizontally flipped view's grid came from the
mirrored image, so the point is looked up at ``u' = W - u``. Views are combined with the (V, N)
weights of :func:`ditr.projection.view_weights` (one-hot for last / random / nearest, uniform for
mean); points no view sees get zeros and ``seen = False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .projection import Correspondences, ProjectionConfig, ViewStrategy, project_scene, view_weights
from .scene import Scene
from .vfm.extract import FeatureSource


@dataclass
class LiftedFeatures:
    features: torch.Tensor  # (N, D) float32, zero rows for unseen points
    seen: torch.Tensor  # (N,) bool
    correspondences: Correspondences


def patch_index(uv: torch.Tensor, image_size: tuple[int, int], grid_size: tuple[int, int],
                flip: bool = False) -> torch.Tensor:
    """Flat index ``row * w + col`` into an (h, w) grid for (N, 2) pixel coordinates (u, v)."""
    (height, width), (h, w) = image_size, grid_size
    u = width - uv[:, 0] if flip else uv[:, 0]
    col = torch.floor(u * (w / width)).long().clamp_(0, w - 1)
    row = torch.floor(uv[:, 1] * (h / height)).long().clamp_(0, h - 1)
    return row * w + col


def lift(grids: Sequence[torch.Tensor], uv: torch.Tensor, image_sizes: torch.Tensor, weights: torch.Tensor,
         flips: Sequence[bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) features and (N,) seen mask from per-view (D, h, w) grids and (V, N) view weights."""
    nv, n = weights.shape
    if len(grids) != nv or uv.shape[:2] != (nv, n):
        raise ValueError(f"{len(grids)} grids, uv {tuple(uv.shape)} and weights {tuple(weights.shape)} disagree")
    dim = grids[0].shape[0] if nv else 0
    out = torch.zeros((n, dim), dtype=torch.float32, device=weights.device)
    for v, grid in enumerate(grids):  # a loop over views only; points are gathered in one go
        idx = torch.nonzero(weights[v] > 0).squeeze(1)
        if idx.numel() == 0:
            continue
        size = (int(image_sizes[v, 0]), int(image_sizes[v, 1]))
        flat = patch_index(uv[v, idx], size, tuple(grid.shape[1:]), bool(flips[v]) if flips else False)
        feats = grid.to(out.device, torch.float32).flatten(1)[:, flat].T
        out.index_add_(0, idx, feats * weights[v, idx, None])
    seen = weights.sum(0) > 0
    return out, seen


def point_features(scene: Scene, source: FeatureSource, strategy: ViewStrategy = "last",
                   projection: ProjectionConfig = ProjectionConfig(), flips: Sequence[bool] | None = None,
                   generator: torch.Generator | None = None) -> LiftedFeatures:
    """Project the scene, fetch (or compute) every view's grid and lift them onto the points."""
    corr = project_scene(scene, projection)
    weights = view_weights(corr, strategy, generator)
    grids = source.grids(scene.views, flips)
    features, seen = lift(grids, corr.uv, corr.image_sizes, weights, flips)
    return LiftedFeatures(features, seen, corr)
