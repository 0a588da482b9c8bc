"""``ditr import semantickitti``: SemanticKITTI scans + labels, with KITTI odometry image_2 where present."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._progress import import_progress

NAME = "semantickitti"
HELP = "SemanticKITTI sequences (velodyne + labels) with KITTI odometry image_2"
NO_SPLITS = "no split lists written: none of the imported sequences is in the benchmark's split"
DESCRIPTION = """SemanticKITTI in its own layout, one scene per scan (OUT/<seq>_<frame>/):

  SRC/sequences/NN/velodyne/FFFFFF.bin    float32 x, y, z, remission
  SRC/sequences/NN/labels/FFFFFF.label    uint32 (low 16 bits semantic id, high 16 instance)
  SRC/sequences/NN/calib.txt              P2 and Tr (Velodyne -> camera 0)
  SRC/sequences/NN/image_2/FFFFFF.png     optional, from KITTI odometry's colour images

Raw ids map to the 19 benchmark classes (moving objects to their static class, -1 = ignore). Scans
without an image become 3D-only scenes and are counted. OUT/splits/{train,val,test}.txt list the
imported scenes of sequences 00-07 + 09-10, 08 and 11-21. The class weights of the cross-entropy
come from the semantickitti preset (the reference's fixed weights), not from the import."""
EXAMPLES = """examples:
  ditr import semantickitti /data/semantickitti/dataset data/semantickitti
  ditr train semantickitti dataset.root=data/semantickitti
  ditr import semantickitti SRC OUT --sequences 08 --frame-step 10 --images /data/kitti_odometry/dataset"""


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", type=Path, help="directory holding sequences/NN/ (or the sequences directory itself)")
    s.add_argument("out", type=Path, help="output directory; one scene per scan, OUT/<seq>_<frame>/")
    s.add_argument("--sequences", nargs="+", metavar="NN", default=None,
                   help="only these sequences (default: every sequence under SRC)")
    s.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="KITTI odometry root holding sequences/NN/image_2 when unpacked apart from SRC")
    s.add_argument("--frame-step", type=int, default=1, help="keep every k-th scan of a sequence (default 1)")
    s.add_argument("--max-frames", type=int, default=None, help="at most this many scans per sequence")


def run(args: argparse.Namespace):
    from ...io.kitti import import_semantickitti

    with import_progress(NAME, "frames") as progress:
        return import_semantickitti(args.src, args.out, sequences=args.sequences, images=args.images,
                                    frame_step=args.frame_step, max_frames=args.max_frames,
                                    progress=progress)
