"""The layout of one training sample and the one operation every sampling transform needs.

A sample is a plain dict. Keys fall into three groups, and the group decides how a transform that
selects or reorders points (grid sampling, sphere crop, dropout) treats it:

* per point, first axis N: ``coord`` (N, 3) float32, ``grid_coord`` (N, 3) int64, ``color`` (N, 3)
  float32 0-255, ``normal`` (N, 3), ``strength`` (N, 1), ``segment`` / ``instance`` (N,) int64 and
  ``index`` (N,) int64, the row of each point in the scene's point arrays;
* per view and point, second axis N: ``pixel_uv`` (V, N, 2) float32, ``visible`` (V, N) bool,
  ``view_depth`` (V, N) float32 (the correspondences, computed on the raw points);
* everything else is left alone: per view ``view_names``, ``image_sizes`` (V, 2) (H, W of the original image),
  ``patch_grids`` (V, 2) (h, w of the view's patch-feature grid), ``view_flipped`` (V,) bool,
  ``view_valid`` (V,) bool (False for padding); per scene ``name``,
  ``inverse`` / ``origin_segment`` / ``represented_by`` (full resolution, for evaluation),
  feature grids.

Keeping correspondences indexed by point means that 3D augmentations (which only move points)
never touch them, and sampling keeps them aligned with the points by construction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Sample = dict[str, Any]

POINT_KEYS = ("coord", "grid_coord", "color", "normal", "strength", "segment", "instance", "index")
VIEW_POINT_KEYS = ("pixel_uv", "visible", "view_depth")


def num_points(sample: Sample) -> int:
    return int(sample["coord"].shape[0])


def take(sample: Sample, idx: np.ndarray) -> Sample:
    """A new sample holding points ``idx`` (in that order); per-view data is shared, not copied."""
    out = dict(sample)
    for key in POINT_KEYS:
        if key in sample:
            out[key] = sample[key][idx]
    for key in VIEW_POINT_KEYS:
        if key in sample:
            out[key] = sample[key][:, idx]
    return out
