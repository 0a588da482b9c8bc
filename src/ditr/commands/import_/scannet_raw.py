"""``ditr import scannet-raw``: ScanNet / ScanNet200 from the raw scans (.sens streams + meshes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...io.splits import HOW_TO_WRITE_SPLITS

from ._progress import import_progress

NAME = "scannet-raw"
HELP = "ScanNet / ScanNet200 raw scans (.sens, _vh_clean_2.ply, segs/aggregation)"
NO_SPLITS = ("no split lists written: no --splits-dir was given (ScanNet's official lists: "
             "Tasks/Benchmark/scannetv2_train.txt, scannetv2_val.txt in its repository); " + HOW_TO_WRITE_SPLITS)
DESCRIPTION = """ScanNet v2 / ScanNet200 straight from the official download: reads each scan's .sens stream
(every --frame-step-th frame: JPEG colour unchanged, depth as uint16 PNG, poses, intrinsics), the
_vh_clean_2.ply mesh (points, colours, normals from the faces) and the annotation files
(segment20, segment200 and instance per point). Frames with invalid (-inf) poses are skipped and
counted; test scans (scans_test/) are imported without labels.

layout:
  SRC/scannetv2-labels.combined.tsv
  SRC/scans/<scene>/<scene>.sens, <scene>_vh_clean_2.ply, <scene>_vh_clean_2.0.010000.segs.json,
                    <scene>.aggregation.json, <scene>.txt
  SRC/scans_test/<scene>/<scene>.sens, <scene>_vh_clean_2.ply, <scene>.txt"""
EXAMPLES = """examples:
  ditr import scannet-raw /data/scannet scenes/ --splits-dir ScanNet/Tasks/Benchmark
  ditr import scannet-raw /data/scannet scenes/ --scenes scene0000_00 scene0011_00 --max-frames 30
  ditr import scannet-raw /data/scannet scenes/ --axis-align --skip-existing
then: ditr train scannet dataset.root=scenes      (or: ditr train scannet200 dataset.root=scenes)"""


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", type=Path, help="ScanNet download root (holding scans/ and scans_test/)")
    s.add_argument("out", type=Path, help="output directory; one scene directory per scan")
    s.add_argument("--frame-step", type=int, default=10, help="keep every k-th frame of the stream (default 10)")
    s.add_argument("--max-frames", type=int, default=None, help="at most this many frames per scene")
    s.add_argument("--labels-tsv", type=Path, default=None,
                   help="label table (default SRC/scannetv2-labels.combined.tsv)")
    s.add_argument("--axis-align", action="store_true",
                   help="apply each scan's axisAlignment (<scene>.txt) to points and camera poses alike")
    s.add_argument("--splits-dir", type=Path, default=None,
                   help="folder with scannetv2_train.txt / scannetv2_val.txt (/ scannetv2_test.txt): "
                        "writes OUT/splits/train.txt, val.txt (, test.txt) with the imported scenes")
    s.add_argument("--scenes", nargs="+", default=None, metavar="SCENE", help="import only these scans")
    s.add_argument("--skip-existing", action="store_true", help="keep scenes already in OUT (resume an import)")


def run(args: argparse.Namespace):
    from ...io.scannet_raw import import_scannet_raw

    with import_progress(NAME, "scenes") as progress:
        return import_scannet_raw(args.src, args.out, frame_step=args.frame_step, max_frames=args.max_frames,
                                  labels_tsv=args.labels_tsv, axis_align=args.axis_align,
                                  splits_dir=args.splits_dir, scenes=args.scenes,
                                  skip_existing=args.skip_existing, progress=progress)
