"""Per-point image features as an index into the sample's patch cells, resolved on the model's device.

Materialising an (N, D) feature per point in the data pipeline would cost N x D x 2 bytes per
sample (200 MB for 100k points of ViT-L) in every worker, pinned buffer and host-to-device copy.
The patch grids themselves are small (V x h x w cells, e.g. 10 x 30 x 40 x 1024 fp16 = 25 MB) and
every point only needs to know which cell(s) to read with what weight. So a sample carries

* ``img_table`` (M, D): the flattened grids of its views, view after view, row-major in each;
* ``img_index`` (N, K) int64 into the M cells and ``img_weight`` (N, K) float32, from
  :func:`ditr.projection.view_weights` (K = 1 for the one-hot strategies last / random / nearest,
  K = V for mean); unseen points have weight 0 and ``img_seen`` False;

and :func:`lookup_image_features` gathers on the GPU. Collate concatenates the tables and shifts
the indices, so the batch works the same way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..lifting import patch_index
from ..projection import Correspondences, ViewStrategy, view_weights

ONE_HOT_STRATEGIES = ("last", "random", "nearest")


def cell_offsets(grid_sizes: np.ndarray) -> np.ndarray:
    """(V + 1,) start of each view's cells in the flattened table (the last entry is M)."""
    return np.concatenate([[0], np.cumsum(grid_sizes[:, 0] * grid_sizes[:, 1])]).astype(np.int64)


def build_lookup(pixel_uv: np.ndarray, visible: np.ndarray, view_depth: np.ndarray, image_sizes: np.ndarray,
                 grid_sizes: np.ndarray, strategy: ViewStrategy, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(img_index (N, K), img_weight (N, K), img_seen (N,)) for one sample.

    ``pixel_uv`` are pixels of the original (H, W) images (already mirrored for flipped views, whose
    grids come from the mirrored images); a pixel falls in patch ``row = floor(v h / H)``,
    ``col = floor(u w / W)`` of the view's (h, w) grid.
    """
    nv, n = visible.shape
    if nv == 0:
        return np.zeros((n, 1), np.int64), np.zeros((n, 1), np.float32), np.zeros(n, bool)
    uv = torch.from_numpy(np.ascontiguousarray(pixel_uv, dtype=np.float32))
    vis = torch.from_numpy(np.ascontiguousarray(visible, dtype=bool))
    corr = Correspondences(uv=uv, depth=torch.from_numpy(np.ascontiguousarray(view_depth, dtype=np.float32)),
                           in_frame=vis, visible=vis, view_names=[f"view{i}" for i in range(nv)],
                           image_sizes=torch.from_numpy(np.asarray(image_sizes, np.int64)))
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 62))) if strategy == "random" else None
    weights = view_weights(corr, strategy, generator).numpy()  # (V, N)
    starts = cell_offsets(grid_sizes)
    cells = np.stack([patch_index(uv[v], (int(image_sizes[v, 0]), int(image_sizes[v, 1])),
                                  (int(grid_sizes[v, 0]), int(grid_sizes[v, 1]))).numpy() + starts[v]
                      for v in range(nv)])  # (V, N): a loop over views, points in one go
    seen = weights.sum(0) > 0
    if strategy in ONE_HOT_STRATEGIES:
        best = weights.argmax(0)
        index = np.where(seen, cells[best, np.arange(n)], 0)[:, None]
        weight = weights[best, np.arange(n)][:, None]
    else:
        index, weight = cells.T.copy(), weights.T.copy()
        index[weight == 0] = 0
    return index.astype(np.int64), weight.astype(np.float32), seen


def lookup_image_features(table: torch.Tensor, img_index: torch.Tensor, img_weight: torch.Tensor,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, D) per-point features: sum over k of ``img_weight[:, k] * table[img_index[:, k]]``.

    Run it where the table lives (the GPU in training). Points with all weights 0 get zeros.
    """
    if table.shape[0] == 0:
        return torch.zeros((img_index.shape[0], table.shape[1]), dtype=dtype, device=table.device)
    # One fused gather + weighted sum per point (about 3x faster than a gather per column).
    return F.embedding_bag(img_index, table.to(dtype), per_sample_weights=img_weight.to(dtype), mode="sum")


def image_table_from_grids(grids: torch.Tensor) -> torch.Tensor:
    """(V, D, h, w) grids -> (V h w, D) table in the cell order of :func:`build_lookup` (online VFM)."""
    return grids.permute(0, 2, 3, 1).reshape(-1, grids.shape[1])
