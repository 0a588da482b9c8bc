"""``ditr import waymo``: Waymo Open Dataset v2 parquet components, one scene per LiDAR frame."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._progress import import_progress

#: docs/design.md#views-per-dataset; equal to ditr.io.waymo.DEFAULT_CROP_FRONT_TOP (a test checks), which is not
#: imported here so that ``ditr --help`` stays fast.
DEFAULT_CROP_FRONT_TOP = 394

NAME = "waymo"
HELP = "Waymo Open Dataset v2 (perception parquet files), one scene per LiDAR frame"
NO_SPLITS = "no split lists written: no scene was imported"
DESCRIPTION = ("Waymo Open Dataset v2 perception components (SRC/{training,validation}/<component>/<context>.parquet: "
               "lidar, lidar_calibration, lidar_pose, lidar_segmentation, camera_image, camera_calibration, "
               "vehicle_pose, and lidar_camera_projection). Writes OUT/<context>_<timestamp>/ per frame, in the "
               "frame's vehicle frame, with the five cameras as views, and OUT/splits/train.txt / val.txt. Each view "
               "carries the pixel Waymo projected every point to (lidar_camera_projection: with lens distortion and "
               "rolling shutter); frames without that component fall back to the pinhole model, with a warning. The "
               "three front cameras (FRONT, FRONT_LEFT, FRONT_RIGHT, 1920x1280) lose their top 394 rows (1920x886 "
               "like the side cameras, docs/design.md#views-per-dataset; --crop-front-top). Needs pyarrow "
               "(pip install 'ditr[waymo]').")
EXAMPLES = """examples:
  ditr import waymo /data/waymo_v2 data/waymo
      (SRC/training/lidar/<context>.parquet ..., SRC/validation/...; labelled frames only)
  ditr import waymo /data/waymo_v2/validation data/waymo_val --max-frames 5
  ditr import waymo /data/waymo_v2 data/waymo_all --no-labelled-only --frame-step 5   (e.g. for distillation)
  ditr import waymo /data/waymo_v2 data/waymo_full --crop-front-top 0   (whole front images, JPEGs as stored)
  ditr import waymo /data/waymo_v2 data/waymo_both --projections both   (both stored projections of a point)"""


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", type=Path, help="directory with training/ and/or validation/ (or one split directory)")
    s.add_argument("out", type=Path, help="output directory; one scene directory per frame plus splits/")
    s.add_argument("--labelled-only", action=argparse.BooleanOptionalAction, default=True,
                   help="import only frames with LiDAR segmentation labels (default; about one frame in five)")
    s.add_argument("--frame-step", type=int, default=1,
                   help="keep every k-th (labelled) frame of a segment (default 1)")
    s.add_argument("--max-frames", type=int, default=None, help="at most this many frames per segment")
    s.add_argument("--crop-front-top", type=int, default=DEFAULT_CROP_FRONT_TOP, metavar="ROWS",
                   help=f"remove this many top rows of the FRONT, FRONT_LEFT and FRONT_RIGHT images (cy moves "
                        f"up with them; the crops are re-encoded as JPEG quality 95) "
                        f"(default {DEFAULT_CROP_FRONT_TOP}, docs/design.md#views-per-dataset; 0 = no crop, the JPEGs "
                        f"are copied as stored)")
    s.add_argument("--projections", choices=("first", "both", "none"), default="first",
                   help="which of a point's two stored camera projections (lidar_camera_projection) the views carry: "
                        "the first only (default: at most one camera per point, as the reference uses them), both "
                        "(a point two cameras see is in both views; images.view_strategy picks), or none (the "
                        "pinhole model of the calibration; 8 bytes per point and camera less on disk)")


def run(args: argparse.Namespace):
    from ...io.waymo import import_waymo

    with import_progress(NAME, "segments") as progress:
        return import_waymo(args.src, args.out, labelled_only=args.labelled_only, frame_step=args.frame_step,
                            max_frames=args.max_frames, crop_front_top=args.crop_front_top,
                            projections=args.projections, progress=progress)
