"""``ditr import capture``: your own point file + a directory of images + a poses file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...io.splits import CAPTURE_SPLITS
from ._normals import add_normals_option

from ...scene import ACQUISITION_KINDS

NAME = "capture"
HELP = "your own capture: a point file + a directory of images + a poses file (JSON or text)"
NO_SPLITS = CAPTURE_SPLITS
DESCRIPTION = """Your own capture (e.g. a LiDAR + camera rig): a point file, a directory of images and a poses file.

Point files: .ply .pcd .las .laz .e57 .npy .txt .xyz .csv (LAS/LAZ/E57 need pip install 'ditr[scans]').
Poses, text (.txt/.csv; spaces or commas, '#' comments, an optional header row), one image per line:
  image fx fy cx cy qw qx qy qz tx ty tz            (quaternion w x y z + translation)
  image fx fy cx cy <12 numbers: 3x4 row-major>     or  image fx fy cx cy <16 numbers: 4x4 row-major>
Poses, JSON: {"intrinsics": {"fx":..,"fy":..,"cx":..,"cy":..}, "convention": "opencv",
  "pose_direction": "cam_to_world", "frames": [{"image": "0001.jpg", "matrix": [[...], ...]},
  {"image": "0002.jpg", "quaternion": [w, x, y, z], "translation": [x, y, z], "intrinsics": {...}}]}
Intrinsics are in pixels of the image files; the poses map into the frame of the point file."""
EXAMPLES = """examples:
  ditr import capture scan.las frames/ poses.txt scenes/my_room
  ditr import capture scan.e57 frames/ poses.json scenes/my_room --convention opengl --pose-direction world_to_cam
  ditr import capture cloud.pcd frames/ poses.csv scenes/my_room --up cameras --frame-step 5
docs/own-scans.md describes the formats, conventions and scale."""


def add_capture_options(s: argparse.ArgumentParser, *, distortion: bool = True,
                        default_acquisition: str = "unknown", scale_default: float | None = 1.0) -> None:
    """Options every own-capture importer shares: scale, up axis, frame subsampling, what made the
    points (and distortion). ``scale_default`` None: a source without a unit (COLMAP), recorded as unknown."""
    default = ("none: the unit stays unknown, noted in the report and in meta.json" if scale_default is None
               else f"{scale_default:g}")
    s.add_argument("--scale", type=float, default=scale_default, metavar="M",
                   help=f"metres per source unit (default {default}). Structure-from-motion has no scale; the 2 cm "
                        "voxel grid and 0.2 m depth tolerance need metres: divide a known length by its measured "
                        "length")
    s.add_argument("--up", default="keep", choices=["keep", "cameras", "+x", "-x", "+y", "-y", "+z", "-z"],
                   help="rotate this direction to +z (models trained on ScanNet expect z up); 'cameras': the mean "
                        "up direction of the cameras (default keep)")
    s.add_argument("--frame-step", type=int, default=1, metavar="K", help="keep every K-th image (sorted by name)")
    s.add_argument("--acquisition", choices=ACQUISITION_KINDS, default=None,
                   help="what made the points, which picks the occlusion test (docs/projection.md): lidar (one scan, "
                        "in the sensor's frame), rgbd, mesh, mvs (dense stereo), sfm (sparse structure from motion) or "
                        f"unknown (default: {default_acquisition})")
    add_normals_option(s)
    if distortion:
        s.add_argument("--ignore-distortion", action="store_true",
                       help="keep the images of distorted cameras and use their pinhole part (counted, with the "
                            "pixel shift at the corners, in the report) instead of undistorting them (the default)")


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("points", type=Path, help="point file (.ply .pcd .las .laz .e57 .npy .txt .xyz .csv)")
    s.add_argument("images", type=Path, help="directory of the images the poses file names")
    s.add_argument("poses", type=Path, help="poses file (.json, or text: .txt/.csv)")
    s.add_argument("out", type=Path, help="output scene directory")
    s.add_argument("--convention", choices=["opencv", "opengl"], default=None,
                   help="camera axes: opencv (x right, y down, z forward) or opengl (x right, y up, z back); "
                        "default: the JSON's 'convention', else opencv")
    s.add_argument("--pose-direction", choices=["cam_to_world", "world_to_cam"], default=None,
                   help="what the poses map: camera to world (default) or world to camera (COLMAP, OpenCV's rvec/tvec)")
    add_capture_options(s, distortion=False)


def run(args: argparse.Namespace):
    from ...io.capture import import_capture

    return import_capture(args.points, args.images, args.poses, args.out, convention=args.convention,
                          pose_direction=args.pose_direction, scale=args.scale, up=args.up,
                          frame_step=args.frame_step, acquisition=args.acquisition or "unknown",
                          estimate_normals=args.normals == "estimate")
