"""PLY point-cloud export (binary, via plyfile), for viewing scenes and predictions in any 3D viewer."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from ..fileio import atomic_write_bytes


def write_ply(path: str | Path, coord: np.ndarray, color: np.ndarray | None = None,
              **scalars: np.ndarray) -> Path:
    """Write points (N, 3) with optional uint8 colours (N, 3) and extra per-point scalar fields."""
    coord = np.asarray(coord, dtype=np.float32)
    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if color is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    fields += [(name, np.asarray(v).dtype.str.lstrip("<>|=")) for name, v in scalars.items()]
    vertex = np.empty(coord.shape[0], dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = coord.T
    if color is not None:
        color = np.asarray(color, dtype=np.uint8)
        vertex["red"], vertex["green"], vertex["blue"] = color.T
    for name, v in scalars.items():
        vertex[name] = np.asarray(v)
    buf = io.BytesIO()
    PlyData([PlyElement.describe(vertex, "vertex")], text=False).write(buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_ply_points(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the vertex positions (float32) and colours (uint8, if present) of a PLY file."""
    v = PlyData.read(str(path))["vertex"].data
    coord = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
    names = v.dtype.names or ()
    color = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8) if "red" in names else None
    return coord, color
