"""``ditr import s3dis``: S3DIS annotated rooms, optionally with the 2D-3D-S perspective frames."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._normals import add_normals_option
from ._progress import import_progress

NAME = "s3dis"
HELP = "S3DIS rooms (Stanford3dDataset_v1.2) + 2D-3D-S rgb/depth/pose frames"
NO_SPLITS = ("no split lists needed: S3DIS's splits are its areas, imported as OUT/Area_N/ folders; the s3dis "
             "preset trains on Area_1-4 and Area_6 and validates on Area_5 (dataset.splits.val=Area_5)")
DESCRIPTION = ("S3DIS rooms from their per-object annotation files (Area_N/<room>/Annotations/<class>_<k>.txt), "
               "with normals estimated from the points and, with --images, the room's 2D-3D-S perspective "
               "frames (area_N/data/{rgb,depth,pose}). Writes OUT/Area_N/<room>/.")
EXAMPLES = """examples:
  ditr import s3dis /data/Stanford3dDataset_v1.2 data/s3dis --images /data/2D-3D-S
  ditr import s3dis /data/Stanford3dDataset_v1.2_Aligned_Version data/s3dis-3d      (points only)
  ditr import s3dis SRC OUT --images IMG --areas Area_5 --max-frames 60

With --images, SRC must be the non-aligned Stanford3dDataset_v1.2: the 2D-3D-S cameras live in its
frame, except those of area_5b, whose poses get a fixed correction (report: area_5b_frames_*).
Each frame's depth map is checked against the room's points; frames agreeing on fewer than
--min-agreement of the points they should see are dropped and counted (report: agreement_by_area)."""


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", type=Path, help="Stanford3dDataset_v1.2 folder (holding Area_1 ... Area_6) or one Area_N")
    s.add_argument("out", type=Path, help="output directory; rooms go to OUT/Area_N/<room>/")
    s.add_argument("--images", type=Path, default=None,
                   help="2D-3D-S folder holding area_1 ... area_5a, area_5b, area_6 (each with data/rgb, depth, pose)")
    s.add_argument("--areas", nargs="+", default=None, metavar="Area_N", help="import only these areas")
    s.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="at most N frames per room, evenly spaced over its cameras (default: all)")
    s.add_argument("--min-agreement", type=float, default=0.1, metavar="F",
                   help="drop frames whose depth matches fewer than this fraction of the room points in view "
                        "(default 0.1; 0 keeps every frame)")
    add_normals_option(s, default="estimate")  # S3DIS has none: "source" leaves the rooms without normals
    s.add_argument("--no-normals", dest="normals", action="store_const", const="source",
                   help=argparse.SUPPRESS)  # the option's earlier name, kept so that scripts keep working
    s.add_argument("--no-area-5b-correction", dest="correct_area_5b", action="store_false",
                   help="read area_5b poses as they are, without the fixed area_5b correction (for checking it: "
                        "the frames then miss the points and are dropped)")


def run(args: argparse.Namespace):
    from ...io.s3dis import import_s3dis

    with import_progress(NAME, "rooms") as progress:
        return import_s3dis(args.src, args.out, images=args.images, areas=args.areas, max_frames=args.max_frames,
                            min_agreement=args.min_agreement, normals=args.normals == "estimate",
                            correct_area_5b=args.correct_area_5b, progress=progress)
