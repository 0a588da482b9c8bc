"""``ditr import kitti``: the KITTI object (3D detection) layout, points + the image_2 camera."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._progress import import_progress

NAME = "kitti"
HELP = "KITTI object layout (training/{velodyne,image_2,calib}), unlabelled"
NO_SPLITS = ("no split lists written: KITTI object frames have no point labels (they serve projection checks "
             "and inference with a model trained elsewhere, not training)")
DESCRIPTION = """KITTI object (3D detection) frames in their own layout, one scene per frame (OUT/<frame>/):

  SRC/training/velodyne/FFFFFF.bin    float32 x, y, z, reflectance
  SRC/training/image_2/FFFFFF.png     left colour camera
  SRC/training/calib/FFFFFF.txt       P0-P3, R0_rect, Tr_velo_to_cam

The camera is placed exactly (P2 @ R0_rect @ Tr_velo_to_cam = K @ world_to_cam). KITTI's object labels
are 3D boxes, not point classes, so the scenes are unlabelled: for feature extraction, projection checks
and inference. Frames without an image become 3D-only scenes and are counted."""
EXAMPLES = """examples:
  ditr import kitti /data/kitti_object scenes/kitti
  ditr import kitti /data/kitti_object scenes/kitti_test --split testing --max-frames 100
  ditr project scenes/kitti/000008 --out corr.npz --occlusion none --render overlays/"""


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", type=Path, help="directory holding training/ (or a split directory itself)")
    s.add_argument("out", type=Path, help="output directory; one scene per frame, OUT/<frame>/")
    s.add_argument("--split", default="training", help="split directory under SRC (training or testing)")
    s.add_argument("--frame-step", type=int, default=1, help="keep every k-th frame (default 1)")
    s.add_argument("--max-frames", type=int, default=None, help="at most this many frames")


def run(args: argparse.Namespace):
    from ...io.kitti import import_kitti_object

    with import_progress(NAME, "frames") as progress:
        return import_kitti_object(args.src, args.out, split=args.split, frame_step=args.frame_step,
                                   max_frames=args.max_frames, progress=progress)
