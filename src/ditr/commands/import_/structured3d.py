"""``ditr import structured3d``: Structured3D rooms rebuilt from their perspective renderings."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._progress import import_progress

NAME = "structured3d"
HELP = "Structured3D perspective renderings -> one scene per room (points back-projected from depth)"
NO_SPLITS = "no split lists written: no room was imported"
DESCRIPTION = ("Structured3D rooms (scene_XXXXX/2D_rendering/<room>/perspective/full/<position>/ with "
               "rgb_rawlight.png, "
               "depth.png, semantic.png, camera_pose.txt). The dataset has no point clouds: every room's depth "
               "maps are back-projected, cleaned of depth discontinuities and merged on a voxel grid. Writes "
               "OUT/scene_XXXXX_room_<id>/ and OUT/splits/{train,val,test}.txt.")
EXAMPLES = """examples:
  ditr import structured3d /data/Structured3D data/structured3d
  ditr import structured3d /data/Structured3D data/structured3d --scenes scene_00000 scene_00001
  ditr import structured3d SRC OUT --voxel-size 0.01 --edge-threshold 0.03

Labels: segment.npy holds the ScanNet-20 classes (mapped by NYU40 id, others -1), segment40.npy the
NYU40 ids minus one. Importing into the same OUT again (e.g. one zip at a time) adds rooms and
rewrites the split files from every room present."""


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", type=Path, help="Structured3D folder holding scene_XXXXX/ (or one scene folder)")
    s.add_argument("out", type=Path, help="output directory; one scene per room, OUT/scene_XXXXX_room_<id>/")
    s.add_argument("--scenes", nargs="+", default=None, metavar="scene_XXXXX", help="import only these scenes")
    s.add_argument("--voxel-size", type=float, default=0.02, metavar="M",
                   help="merge back-projected points on this grid, metres (default 0.02)")
    s.add_argument("--edge-threshold", type=float, default=0.05, metavar="F",
                   help="drop pixels whose depth jumps by more than F x depth to a neighbour "
                        "(default 0.05; 0 keeps all)")


def run(args: argparse.Namespace):
    from ...io.structured3d import import_structured3d

    with import_progress(NAME, "rooms") as progress:
        return import_structured3d(args.src, args.out, scenes=args.scenes, voxel_size=args.voxel_size,
                                   edge_threshold=args.edge_threshold, progress=progress)
