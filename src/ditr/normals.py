"""Point normals estimated from the points alone, for scans that come without them.

The indoor presets feed colour + normal to the network, yet several sources carry no normals
(S3DIS, preprocessed ScanNet copies, point files of own captures). Every place in ditr that needs
normals it cannot read (``ditr import ... --normals estimate``, ``ditr predict`` on a scene without
``normal.npy``) calls :func:`estimate_normals`, so imported and predicted scenes get the same ones.
Normals of mesh faces and depth images (ScanNet meshes, Structured3D renderings, synthetic rooms)
are exact and computed where those are read instead.

The rule (docs/datasets.md#normals):

* Neighbourhood: space is cut into cubes of ``cell`` metres; the neighbourhood of a point is its
  cube and the 26 around it. All points of a cube share one normal, which is as fine as the voxels
  a model sees when ``cell`` is about twice the grid size. Without a ``cell``, the cubes start at
  4 cm and double until the median neighbourhood holds 12 points, so sparse clouds get normals too.
* Direction: the eigenvector of the smallest eigenvalue of the neighbourhood's covariance (the
  direction in which the points spread least), unit length. A neighbourhood of fewer than 3
  points defines no plane: its points get the zero vector.
* Orientation: each normal is turned to face ``viewpoint`` (a normal n at point p satisfies
  ``n . (viewpoint - p) >= 0``). Inside a room seen from its middle, floors point up, ceilings
  down and walls into the room, the side a scanner saw.

Cost: first and second moments are summed per cube once, then over the 27 neighbours of every
cube, so time grows with the number of occupied cubes, not with how dense the scan is (measured
on this project's shared 2-core machine: 1.1 s for ScanNet's scene0000_00, 81k points; 3.9 s for
a million points).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import DitrError

if TYPE_CHECKING:
    from .scene import View

#: Smallest cube size (metres) chosen from the points: twice the 2 cm grid of the indoor presets.
DEFAULT_CELL = 0.04
#: Points the median neighbourhood must hold before the automatic cube size stops growing.
MIN_NEIGHBOURS = 12
_MAX_DOUBLINGS = 6  # 0.04 m -> 2.56 m at most

_PAIRS = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]  # the covariance's upper triangle


def estimate_normals(coord: np.ndarray, cell: float | None = None, viewpoint: np.ndarray | None = None
                     ) -> np.ndarray:
    """(N, 3) float32 normals of ``coord`` (N, 3) by the rule of this module's docstring.

    ``cell`` None picks the cube size from the points: :data:`DEFAULT_CELL`, doubled until the
    median neighbourhood holds :data:`MIN_NEIGHBOURS` points (a sparse structure-from-motion cloud
    needs larger cubes than a dense scan). ``viewpoint`` defaults to the centre of the points'
    bounding box (right for a room scanned from inside; pass the cameras' mean position where
    there are cameras).
    """
    coord = np.asarray(coord)
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise DitrError(f"estimate_normals: coord must have shape (N, 3), got {coord.shape}")
    if cell is not None and not cell > 0:
        raise DitrError(f"estimate_normals: cell must be a positive size in metres, got {cell}")
    if len(coord) == 0:
        return np.zeros((0, 3), np.float32)
    pts = coord.astype(np.float64)
    x = pts - pts.mean(0)  # centred: the moments keep their precision far from the origin
    if cell is None:
        size = DEFAULT_CELL
        summed, inverse = _neighbourhood_moments(x, size)
        for _ in range(_MAX_DOUBLINGS):
            if np.median(summed[inverse, 0]) >= MIN_NEIGHBOURS:
                break
            size *= 2
            summed, inverse = _neighbourhood_moments(x, size)
    else:
        summed, inverse = _neighbourhood_moments(x, cell)
    count = summed[:, 0]
    mean = summed[:, 1:4] / count[:, None]
    cov = np.empty((len(summed), 3, 3))
    for c, (i, j) in enumerate(_PAIRS):
        cov[:, i, j] = cov[:, j, i] = summed[:, 4 + c] / count - mean[:, i] * mean[:, j]
    normals = np.linalg.eigh(cov)[1][:, :, 0]  # eigenvalues ascend: column 0 is the least spread
    normals[count < 3] = 0.0
    normals = normals[inverse]
    target = (pts.min(0) + pts.max(0)) / 2 if viewpoint is None else np.asarray(viewpoint, np.float64)
    flip = np.einsum("ij,ij->i", normals, target - pts) < 0
    normals[flip] *= -1
    return normals.astype(np.float32)


def _neighbourhood_moments(x: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Per occupied cube: (count, sum x, sum x_i x_j) over it and its 26 neighbours; each point's cube."""
    cubes = np.floor((x - x.min(0)) / cell).astype(np.int64) + 1  # +1: every neighbour index is >= 0
    dims = cubes.max(0) + 2
    flat = (cubes[:, 0] * dims[1] + cubes[:, 1]) * dims[2] + cubes[:, 2]
    keys, inverse = np.unique(flat, return_inverse=True)
    inverse = inverse.reshape(-1)
    m = len(keys)
    columns = [np.ones(len(x))] + [x[:, i] for i in range(3)] + [x[:, i] * x[:, j] for i, j in _PAIRS]
    per_cube = np.stack([np.bincount(inverse, c, m) for c in columns], 1)
    summed = np.zeros_like(per_cube)
    offsets = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), -1).reshape(-1, 3)
    for dx, dy, dz in offsets:  # 27 passes, each vectorised over all cubes
        neighbour = keys + (dx * dims[1] + dy) * dims[2] + dz
        pos = np.minimum(np.searchsorted(keys, neighbour), m - 1)
        hit = keys[pos] == neighbour
        summed[hit] += per_cube[pos[hit]]
    return summed, inverse


def scene_normals(coord: np.ndarray, views: Sequence[View], cell: float | None = None) -> np.ndarray:
    """Normals of a scene's points facing its cameras' mean position (the box centre without cameras).

    The cameras stood where the surfaces were seen from, which orients walls, furniture and the
    ground of an outdoor capture better than the box centre does.
    """
    viewpoint = np.mean([v.cam_to_world[:3, 3] for v in views], axis=0) if views else None
    return estimate_normals(coord, cell, viewpoint)
