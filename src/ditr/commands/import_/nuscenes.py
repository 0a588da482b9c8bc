"""``ditr import nuscenes``: nuScenes key frames (LiDAR, six cameras, lidarseg) from the devkit tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...io.splits import HOW_TO_WRITE_SPLITS

from ._progress import import_progress

NAME = "nuscenes"
HELP = "nuScenes key frames (LIDAR_TOP + 6 cameras + lidarseg) from the JSON tables"
NO_SPLITS = "no split lists written (--no-splits, or no imported scene is in a split); " + HOW_TO_WRITE_SPLITS
DESCRIPTION = (
    "nuScenes as downloaded from nuscenes.org: SRC/<version>/*.json tables (v1.0-trainval, v1.0-mini, "
    "v1.0-test), SRC/samples/, optional SRC/lidarseg/<version>/ and SRC/sweeps/. Every key frame becomes "
    "OUT/<scene>/<sample token>/ with points in the LiDAR frame, the six cameras (ego motion between "
    "LiDAR and camera timestamps compensated) and lidarseg labels mapped to the 16 benchmark classes; "
    "OUT/splits/{train,val}.txt list the scenes per split. No nuscenes-devkit needed.")
EXAMPLES = """examples:
  ditr import nuscenes /data/nuscenes data/nuscenes --split-file splits.json     (v1.0-trainval)
  ditr import nuscenes /data/nuscenes-mini data/nuscenes-mini                    (mini split built in)
  ditr import nuscenes /data/nuscenes data/nusc-try --version v1.0-trainval --scenes scene-0001 \\
      --max-samples 5 --no-splits
  ditr import nuscenes /data/nuscenes data/nuscenes --split-file splits.json --sweeps 9

splits.json: {"train": [scene names], "val": [...]}; the devkit writes it with
  python -c "import json; from nuscenes.utils.splits import create_splits_scenes as c; print(json.dumps(c()))" \\
      > splits.json
A JSON report is printed (samples, missing cameras per channel, unlabelled samples, seconds per sample)."""


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", type=Path, help="nuScenes root with <version>/*.json, samples/, lidarseg/")
    s.add_argument("out", type=Path, help="output root: OUT/<scene>/<sample token>/ and OUT/splits/")
    s.add_argument("--version", default=None, help="table directory, e.g. v1.0-trainval (default: the only one)")
    s.add_argument("--scenes", nargs="+", default=None, metavar="NAME", help="only these scenes (scene-0061 ...)")
    s.add_argument("--max-samples", type=int, default=None, metavar="N",
                   help="at most N key frames per scene (the first in time)")
    s.add_argument("--sweeps", type=int, default=0, metavar="K",
                   help="also accumulate the K previous LiDAR sweeps (needs SRC/sweeps/; labels -1)")
    s.add_argument("--split-file", type=Path, default=None, metavar="JSON",
                   help="scene names per split (needed for v1.0-trainval; v1.0-mini's split is built in)")
    s.add_argument("--no-splits", action="store_true", help="write no OUT/splits/ lists")


def run(args: argparse.Namespace):
    from rich.console import Console

    from ...io.nuscenes import import_nuscenes

    with import_progress(NAME, "samples") as progress:
        report = import_nuscenes(args.src, args.out, version=args.version, scenes=args.scenes,
                                 max_samples=args.max_samples, sweeps=args.sweeps, split_file=args.split_file,
                                 splits=not args.no_splits, progress=progress)
    missing = sum(report.missing_cameras.values()) + report.missing_image_files
    if missing:
        Console(stderr=True).print(f"ditr import nuscenes: warning: {missing} camera views skipped "
                                   f"(no key frame per channel: {report.missing_cameras}; image files absent: "
                                   f"{report.missing_image_files})")
    return report
