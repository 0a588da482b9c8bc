"""``ditr import scannet``: preprocessed ScanNet scenes (.npy per scene) plus exported frames."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "scannet"
HELP = "preprocessed ScanNet scenes (.npy) + exported frames"
DESCRIPTION = ("Preprocessed ScanNet scenes (.npy per scene) plus frames exported by ScanNet's SensReader "
               "(color/, pose/, intrinsic/, optional depth/).")
EXAMPLES = """examples:
  ditr import scannet /data/scannet_preprocessed scenes/
      (SRC/<scene>/coord.npy ... plus SRC/frames/<scene>/{color,pose,intrinsic}/ from ScanNet's exporter)
  ditr import scannet SRC OUT --frame-step 10 --max-frames 30 --segment segment200"""


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", type=Path, help="directory with <scene>/coord.npy and frames/<scene>/")
    s.add_argument("out", type=Path, help="output directory; one scene directory per scene")
    s.add_argument("--frame-step", type=int, default=1, help="keep every k-th exported frame (default 1)")
    s.add_argument("--max-frames", type=int, default=None, help="at most this many frames per scene")
    s.add_argument("--segment", default="segment20", help="label array to use (segment20 / segment200)")
    s.add_argument("--axis-aligned", action="store_true",
                   help="the points were axis-aligned: align the camera poses with axis_align_matrix.txt")


def run(args: argparse.Namespace):
    from ...io.scannet import import_scannet

    return import_scannet(args.src, args.out, frame_step=args.frame_step, max_frames=args.max_frames,
                          segment=args.segment, axis_aligned=args.axis_aligned)
