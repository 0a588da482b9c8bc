"""Pixel -> patch cell -> point: how every point gets the 2D feature of the view(s) that see it.

Patch cells. For a view of original size (H, W) whose patch grid is (h, w) (the image was resized
to (h p, w p) for the VFM), a point at pixel (u, v) falls in patch ``row = floor(v h / H)``,
``col = floor(u w / W)`` (docs/design.md#point-to-patch-lookup: nearest patch, no upsampling). A
horizontally flipped view's grid came from the mirrored image, so its pixels are mirrored first
(``u' = W - u``; the data pipeline's ImageFlip already did it, :func:`lift` does it for its ``flips``).

The table. The patch grids of a sample's views, flattened view after view and row-major in each,
make an (M, D) table (:func:`image_table_from_grids`); view ``v``'s cells start at
``cell_offsets(...)[v]``.

View fusion (which view a point reads; not to be confused with which frames a sample uses, the
dataset's frame selection): :func:`view_weights` gives (V, N) weights with which every point
combines the views that see it: one-hot for ``last`` (the reference), ``random`` and
``nearest``, uniform over the seeing views for ``mean``; points no view sees get zero weights.

The lookup. Per point, the cells to read and their weights (:func:`build_lookup`: ``img_index``
(N, K) and ``img_weight`` (N, K), K = 1 for the one-hot fusions, K = V for ``mean``) are all a data
worker computes; the model gathers (:func:`lookup_image_features`) where the table lives (the GPU
in training), so an (N, D) feature never crosses a worker queue. :func:`lift` is the same lookup
for the dense case: per-view grids and arbitrary (V, N) weights in, (N, D) features out.

This module depends on torch and numpy only, so the data pipeline and the models both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DitrError

ViewFusion = Literal["last", "random", "nearest", "mean"]
VIEW_FUSIONS: tuple[str, ...] = ("last", "random", "nearest", "mean")
#: Fusions whose weights are one-hot: each seen point reads exactly one view.
ONE_HOT_FUSIONS: tuple[str, ...] = ("last", "random", "nearest")


# ------------------------------------------------------------------------------------------ cells
def _cells(uv: torch.Tensor, image_hw: torch.Tensor, grid_hw: torch.Tensor, start: torch.Tensor | int = 0,
           flip: torch.Tensor | None = None) -> torch.Tensor:
    """``start + row * w + col`` of pixels ``uv`` (..., 2): the one place the cell arithmetic lives.

    ``image_hw`` (H, W) and ``grid_hw`` (h, w) are int64 tensors (..., 2) and ``start`` / ``flip``
    (mirror u first) tensors that broadcast against ``uv[..., 0]``: one value per view, per point
    or for all. The ratios w / W and h / H are computed in double and rounded to the pixels' dtype.
    """
    height, width, h, w = image_hw[..., 0], image_hw[..., 1], grid_hw[..., 0], grid_hw[..., 1]
    u = uv[..., 0]
    if flip is not None:
        u = torch.where(flip, width.to(u.dtype) - u, u)
    col = torch.floor(u * (w.double() / width.double()).to(u.dtype)).long().clamp_(min=0)
    row = torch.floor(uv[..., 1] * (h.double() / height.double()).to(u.dtype)).long().clamp_(min=0)
    return start + torch.minimum(row, h - 1) * w + torch.minimum(col, w - 1)


def patch_index(uv: torch.Tensor, image_size: tuple[int, int], patch_grid: tuple[int, int],
                flip: bool = False) -> torch.Tensor:
    """Flat index ``row * w + col`` into an (h, w) patch grid for (N, 2) pixel coordinates (u, v)."""
    device = uv.device
    return _cells(uv, torch.tensor(image_size, dtype=torch.int64, device=device),
                  torch.tensor(patch_grid, dtype=torch.int64, device=device),
                  flip=torch.tensor(bool(flip), device=device) if flip else None)


def cell_offsets(patch_grids: np.ndarray) -> np.ndarray:
    """(V + 1,) start of each view's cells in the table of (V, 2) patch grids (the last entry is M)."""
    patch_grids = np.asarray(patch_grids, np.int64).reshape(-1, 2)
    return np.concatenate([[0], np.cumsum(patch_grids[:, 0] * patch_grids[:, 1])]).astype(np.int64)


def view_cells(uv: torch.Tensor, image_sizes: Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
               patch_grids: Sequence[Sequence[int]] | np.ndarray, flips: Sequence[bool] | None = None,
               views: torch.Tensor | None = None) -> torch.Tensor:
    """Table rows (each view's :func:`patch_index` + its cell offset) of (V, N, 2) pixels: (V, N),
    or with ``views`` (N,), the (N,) rows of each point's pixel in its own view only."""
    nv = int(uv.shape[0])
    sizes = torch.as_tensor(np.asarray(image_sizes, np.int64).reshape(nv, 2), device=uv.device)
    grids_np = np.asarray(patch_grids, np.int64).reshape(nv, 2)
    grids = torch.as_tensor(grids_np, device=uv.device)
    starts = torch.as_tensor(cell_offsets(grids_np)[:-1], device=uv.device)
    flip = torch.as_tensor(np.asarray(flips, bool), device=uv.device) if flips is not None and any(flips) else None
    if views is not None:  # per point: its view's pixel, size, grid and offset
        point_uv = uv[views, torch.arange(uv.shape[1], device=uv.device)]
        return _cells(point_uv, sizes[views], grids[views], starts[views], None if flip is None else flip[views])
    return _cells(uv, sizes[:, None], grids[:, None], starts[:, None], None if flip is None else flip[:, None])


# ------------------------------------------------------------------------------------------ fusion
def best_view(visible: torch.Tensor | np.ndarray, depth: torch.Tensor | np.ndarray | None = None,
              fusion: ViewFusion = "last", generator: torch.Generator | None = None) -> torch.Tensor:
    """(N,) the one view each point reads under a one-hot fusion (0 for points no view sees).

    ``last``: the last seeing view in the list; ``random``: a uniformly random seeing view (drawn
    with ``generator``); ``nearest``: the seeing view with the smallest camera ``depth`` (V, N).
    """
    vis = torch.as_tensor(visible, dtype=torch.bool)
    nv, n = vis.shape
    if fusion == "last":
        score = torch.arange(1, nv + 1, device=vis.device, dtype=torch.float32)[:, None].expand(nv, n)
    elif fusion == "random":
        device = "cpu" if generator is None else generator.device
        score = torch.rand((nv, n), generator=generator, device=device).to(vis.device) + 1.0
    elif fusion == "nearest":
        if depth is None:
            raise DitrError("the nearest view fusion needs the camera depth of every (view, point)")
        score = 1.0 / torch.as_tensor(depth, dtype=torch.float32, device=vis.device).clamp(min=1e-6)
    elif fusion == "mean":
        raise DitrError("the mean view fusion reads every seeing view, not one: use view_weights")
    else:
        raise DitrError(f"view fusion must be one of {VIEW_FUSIONS}, not {fusion!r}")
    return torch.where(vis, score, torch.zeros((), device=vis.device)).argmax(0)


def view_weights(visible: torch.Tensor | np.ndarray, depth: torch.Tensor | np.ndarray | None = None,
                 fusion: ViewFusion = "last", generator: torch.Generator | None = None) -> torch.Tensor:
    """(V, N) float32 weights with which each point combines the views that see it.

    ``visible`` (V, N) bool and ``depth`` (V, N) (only ``nearest`` reads it) are tensors or arrays.
    ``last``, ``random`` and ``nearest`` give one-hot columns (see :func:`best_view`); ``mean``
    averages all seeing views. Columns of points no view sees are all zero.
    """
    vis = torch.as_tensor(visible, dtype=torch.bool)
    nv, n = vis.shape
    if fusion == "mean":
        return vis.float() / vis.sum(0, keepdim=True).clamp(min=1)
    best = best_view(vis, depth, fusion, generator)
    weights = torch.zeros((nv, n), device=vis.device)
    weights.scatter_(0, best[None], 1.0)
    return weights * vis.amax(0, keepdim=True)  # amax: several times faster than any here


def _rows_and_weights(uv: torch.Tensor, image_sizes: Any, patch_grids: Any, weights: torch.Tensor, one_hot: bool,
                      flips: Sequence[bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(index (N, K), weight (N, K)) of (V, N) view weights: K = 1 when every column has at most
    one non-zero weight (``one_hot``: only that view's cell is computed), else K = V; entries of
    weight 0 read row 0."""
    if one_hot:
        best = (weights != 0).to(torch.uint8).argmax(0)
        weight = weights.gather(0, best[None])[0]
        index = torch.where(weight != 0, view_cells(uv, image_sizes, patch_grids, flips, views=best), 0)
        return index[:, None], weight[:, None]
    index, weight = _transposed(view_cells(uv, image_sizes, patch_grids, flips)), _transposed(weights)
    return index.mul_(weight != 0), weight


def _transposed(x: torch.Tensor) -> torch.Tensor:
    """(V, N) -> contiguous (N, V); on the CPU through NumPy, whose transposing copy is several
    times faster than torch's for these shapes."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.ascontiguousarray(x.numpy().T))
    return x.T.contiguous()


# ------------------------------------------------------------------------------------------ lookup
def build_lookup(pixel_uv: np.ndarray, visible: np.ndarray, view_depth: np.ndarray, image_sizes: np.ndarray,
                 patch_grids: np.ndarray, fusion: ViewFusion, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(img_index (N, K) int64, img_weight (N, K) float32, img_seen (N,) bool) of one sample.

    ``pixel_uv`` (V, N, 2) are pixels of the original (H, W) images, already mirrored for flipped
    views (whose grids come from the mirrored images); ``image_sizes`` (V, 2) are (H, W) and
    ``patch_grids`` (V, 2) the (h, w) of each view's grid. ``rng`` draws the ``random`` fusion.
    The arrays are shared with torch, not copied; the results are NumPy arrays.
    """
    nv, n = visible.shape
    if nv == 0:
        return np.zeros((n, 1), np.int64), np.zeros((n, 1), np.float32), np.zeros(n, bool)
    uv = torch.from_numpy(np.ascontiguousarray(pixel_uv, dtype=np.float32))
    vis = torch.from_numpy(np.ascontiguousarray(visible, dtype=bool))
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 62))) if fusion == "random" else None
    seen = vis.amax(0)  # (torch.any over the first axis is several times slower)
    if fusion in ONE_HOT_FUSIONS:  # only the cell of the view each point reads
        depth = torch.from_numpy(np.ascontiguousarray(view_depth, dtype=np.float32)) if fusion == "nearest" else None
        best = best_view(vis, depth, fusion, generator)
        index = torch.where(seen, view_cells(uv, image_sizes, patch_grids, views=best), 0)[:, None]
        weight = seen.float()[:, None]
    else:
        index, weight = _rows_and_weights(uv, image_sizes, patch_grids, view_weights(vis, None, fusion), False)
    return index.numpy(), weight.numpy(), seen.numpy()


def lookup_image_features(table: torch.Tensor, img_index: torch.Tensor, img_weight: torch.Tensor,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, D) per-point features: sum over k of ``img_weight[:, k] * table[img_index[:, k]]``.

    Run it where the table lives (the GPU in training). Points with all weights 0 get zeros.
    """
    if table.shape[0] == 0:
        return torch.zeros((img_index.shape[0], table.shape[1]), dtype=dtype, device=table.device)
    # One fused gather + weighted sum per point (about 3x faster than a gather per column).
    return F.embedding_bag(img_index, table.to(dtype), per_sample_weights=img_weight.to(dtype), mode="sum")


def image_table_from_grids(grids: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """(M, D) table in the cell order of :func:`build_lookup` from (V, D, h, w) grids of one size,
    or from a sequence of (D, h_v, w_v) grids (views of different sizes)."""
    if isinstance(grids, torch.Tensor):
        return grids.permute(0, 2, 3, 1).reshape(-1, grids.shape[1])
    return torch.cat([g.flatten(1).T for g in grids])


def lift(grids: Sequence[torch.Tensor], uv: torch.Tensor, image_sizes: torch.Tensor, weights: torch.Tensor,
         flips: Sequence[bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) float32 features and (N,) seen mask from per-view (D, h, w) grids, (V, N, 2) pixels
    and (V, N) view weights: :func:`build_lookup`'s cells and :func:`lookup_image_features`, dense."""
    nv, n = weights.shape
    if len(grids) != nv or uv.shape[:2] != (nv, n):
        raise ValueError(f"{len(grids)} grids, uv {tuple(uv.shape)} and weights {tuple(weights.shape)} disagree")
    seen = weights.sum(0) > 0
    if nv == 0:
        return torch.zeros((n, 0), dtype=torch.float32, device=weights.device), seen
    device = weights.device
    one_hot = bool(((weights != 0).sum(0) <= 1).all())
    index, weight = _rows_and_weights(uv.to(device), torch.as_tensor(image_sizes).tolist(),
                                      [tuple(g.shape[1:]) for g in grids], weights.float(), one_hot, flips)
    table = image_table_from_grids([g.to(device, torch.float32) for g in grids])
    return lookup_image_features(table, index, weight), seen
