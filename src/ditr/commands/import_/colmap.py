"""``ditr import colmap``: a COLMAP dense workspace or sparse model (text or binary) with its images."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...io.splits import CAPTURE_SPLITS

from .capture import add_capture_options

NAME = "colmap"
HELP = "a COLMAP reconstruction: dense workspace (undistorted, fused.ply) or sparse model (.bin/.txt)"
NO_SPLITS = CAPTURE_SPLITS
DESCRIPTION = """A COLMAP reconstruction of your photos or video frames, as one scene.

SRC is searched for: a dense workspace (colmap image_undistorter output: sparse/ + images/ [+ fused.ply],
also as SRC/dense/), else a sparse model (SRC, SRC/sparse or the one SRC/sparse/N) with SRC/images.
Points: --points FILE, else the workspace's fused.ply (dense, coloured, with normals), else the
model's points3D (sparse). COLMAP's poses are world->camera in OpenCV axes; they are inverted.
Distorted cameras (SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV and the equidistant fisheye models)
are undistorted: their images are resampled into pinhole images (the report counts them).
COLMAP has no metric scale: pass --scale (metres per COLMAP unit); without it the unit stays
unknown (a note says how to measure it; meta.json records "units": "unknown")."""
EXAMPLES = """examples:
  ditr import colmap project/dense scenes/my_room --scale 0.87
  ditr import colmap project scenes/my_room --scale 0.87 --points project/dense/fused.ply   # undistorts
  ditr import colmap project scenes/my_room --model project/sparse/1 --up cameras
docs/own-scans.md walks from phone photos through COLMAP to this command."""


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", type=Path, help="COLMAP project, dense workspace or sparse model directory")
    s.add_argument("out", type=Path, help="output scene directory")
    s.add_argument("--model", type=Path, default=None, help="the sparse model directory, if not found under SRC")
    s.add_argument("--images", type=Path, default=None, help="image directory (default: images/ of the workspace)")
    s.add_argument("--points", type=Path, default=None,
                   help="point file in COLMAP's frame (.ply .pcd .las .laz .e57 .npy .txt .xyz), instead of "
                        "fused.ply / points3D")
    add_capture_options(s, default_acquisition="mvs for fused.ply, sfm for the sparse points, unknown for --points",
                        scale_default=None)


def run(args: argparse.Namespace):
    from ...io.colmap import import_colmap

    return import_colmap(args.src, args.out, model=args.model, images=args.images, points=args.points,
                         scale=args.scale, up=args.up, ignore_distortion=args.ignore_distortion,
                         frame_step=args.frame_step, acquisition=args.acquisition,
                         estimate_normals=args.normals == "estimate")
