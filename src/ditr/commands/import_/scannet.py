"""``ditr import scannet``: preprocessed ScanNet scenes (.npy per scene) plus exported frames."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...io.splits import HOW_TO_WRITE_SPLITS

from ._normals import add_normals_option

NAME = "scannet"
HELP = "preprocessed ScanNet scenes (.npy) + exported frames"
NO_SPLITS = ("no split lists written: SRC has no train/ val/ test/ folders and no --splits-dir was given "
             "(ScanNet's official lists: Tasks/Benchmark/scannetv2_train.txt, scannetv2_val.txt in its "
             "repository); " + HOW_TO_WRITE_SPLITS)
DESCRIPTION = ("Preprocessed ScanNet scenes (.npy per scene) plus frames exported by ScanNet's SensReader "
               "(color/, pose/, intrinsic/, optional depth/).")
EXAMPLES = """examples:
  ditr import scannet /data/scannet_preprocessed scenes/ --splits-dir ScanNet/Tasks/Benchmark
      (SRC/<scene>/coord.npy ... plus SRC/frames/<scene>/{color,pose,intrinsic}/ from ScanNet's exporter)
  ditr import scannet /data/scannet_preprocessed scenes/ --normals estimate
      (SRC/train/<scene>/, SRC/val/<scene>/: split lists from the folders; normals for scenes stored without)
  ditr import scannet SRC OUT --frame-step 10 --max-frames 30 --segment segment200
then: ditr train scannet dataset.root=OUT    (reads OUT/splits/train.txt and val.txt)"""


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", type=Path, help="directory with <scene>/coord.npy (or <split>/<scene>/coord.npy) and "
                                          "frames/<scene>/")
    s.add_argument("out", type=Path, help="output directory; one scene directory per scene")
    s.add_argument("--frame-step", type=int, default=1, help="keep every k-th exported frame (default 1)")
    s.add_argument("--max-frames", type=int, default=None, help="at most this many frames per scene")
    s.add_argument("--segment", default="segment20", help="label array to use (segment20 / segment200)")
    s.add_argument("--axis-aligned", action="store_true",
                   help="the points were axis-aligned: align the camera poses with axis_align_matrix.txt")
    s.add_argument("--splits-dir", type=Path, default=None,
                   help="folder with scannetv2_train.txt / scannetv2_val.txt (/ scannetv2_test.txt): writes "
                        "OUT/splits/train.txt, val.txt (, test.txt) (default: from SRC/train/, SRC/val/ folders)")
    add_normals_option(s)


def run(args: argparse.Namespace):
    from ...io.scannet import import_scannet

    return import_scannet(args.src, args.out, frame_step=args.frame_step, max_frames=args.max_frames,
                          segment=args.segment, axis_aligned=args.axis_aligned, splits_dir=args.splits_dir,
                          estimate_normals=args.normals == "estimate")
