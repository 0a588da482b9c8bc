"""``ditr import nerfstudio``: a nerfstudio or instant-ngp transforms.json with its images and points."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...io.splits import CAPTURE_SPLITS

from .capture import add_capture_options

NAME = "nerfstudio"
HELP = "a nerfstudio / instant-ngp capture: transforms.json + images + a point cloud"
NO_SPLITS = CAPTURE_SPLITS
DESCRIPTION = """A nerfstudio (ns-process-data) or instant-ngp capture, as one scene.

SRC is transforms.json or its directory. Poses (transform_matrix) are camera-to-world in OpenGL axes
(x right, y up, z back) and are turned into OpenCV's. Intrinsics: fl_x/fl_y/cx/cy/w/h (global or per
frame) or instant-ngp's camera_angle_x. Points: ply_file_path (nerfstudio's sparse_pc.ply) or --points.
Per-frame depth_file_path maps are used for occlusion (--depth-unit metres per value)."""
EXAMPLES = """examples:
  ditr import nerfstudio processed/ scenes/my_room
  ditr import nerfstudio processed/ scenes/my_room --points colmap/dense/fused.ply --points-frame colmap
  ditr import nerfstudio processed/ scenes/my_room --points export/point_cloud.ply --points-frame dataparser \\
      --dataparser-transforms outputs/my_room/nerfacto/RUN/dataparser_transforms.json
docs/own-scans.md describes the conventions and what is (not) applied."""


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", type=Path, help="transforms.json or the directory holding it")
    s.add_argument("out", type=Path, help="output scene directory")
    s.add_argument("--transforms", default=None, metavar="NAME",
                   help="file name inside SRC (default transforms.json; e.g. transforms_train.json)")
    s.add_argument("--points", type=Path, default=None, help="point file instead of ply_file_path")
    s.add_argument("--points-frame", choices=["transforms", "colmap", "dataparser"], default="transforms",
                   help="frame of the points: that of transform_matrix (default); COLMAP's (applies "
                        "applied_transform); nerfstudio's normalised training frame (undoes --dataparser-transforms)")
    s.add_argument("--dataparser-transforms", type=Path, default=None, metavar="FILE",
                   help="dataparser_transforms.json of a trained nerfstudio model, for --points-frame dataparser")
    s.add_argument("--depth-unit", type=float, default=0.001, metavar="M",
                   help="metres per stored depth value of depth_file_path maps (default 0.001: millimetres)")
    add_capture_options(s, default_acquisition="sfm for ply_file_path, unknown for --points")


def run(args: argparse.Namespace):
    from ...io.nerfstudio import import_nerfstudio

    return import_nerfstudio(args.src, args.out, transforms=args.transforms, points=args.points,
                             points_frame=args.points_frame, dataparser_transforms=args.dataparser_transforms,
                             scale=args.scale, up=args.up, ignore_distortion=args.ignore_distortion,
                             frame_step=args.frame_step, depth_unit=args.depth_unit, acquisition=args.acquisition,
                             estimate_normals=args.normals == "estimate")
