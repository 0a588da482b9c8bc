"""``ditr import <dataset> SRC OUT``: convert a dataset's own layout into the ditr scene format.

One module per source format in this package, each defining ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> report`` (a dataclass or dict, printed as one JSON
line); adding a format means adding its module name to ``FORMATS``. The modules keep their heavy
imports inside ``run`` so that ``ditr --help`` stays fast.

Training reads ``OUT/splits/<split>.txt``, so every import ends with one line on stderr saying which
split lists it wrote, or why it wrote none (a module's ``NO_SPLITS``: what its source lacks) and how
to write them; the JSON report carries the same as ``splits`` / ``splits_note``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import asdict, is_dataclass

from ...io.splits import HOW_TO_WRITE_SPLITS

NAME = "import"
HELP = "Import a dataset or your own capture from its own layout into ditr scene directories."
EXAMPLES = """examples:
  ditr import scannet /data/scannet_preprocessed scenes/
  ditr import DATASET --help        (each format's layout, options and examples)"""

FORMATS = ["scannet", "scannet_raw", "scannetpp", "semantickitti", "kitti", "nuscenes", "waymo", "colmap", "nerfstudio",
           "capture", "s3dis", "structured3d"]
#: What an import without split lists says when its format has no ``NO_SPLITS`` of its own.
_NO_SPLITS = f"no split lists written: SRC holds no split information; {HOW_TO_WRITE_SPLITS}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for module_name in FORMATS:
        module = importlib.import_module(f".{module_name}", __package__)
        s = sub.add_parser(module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           epilog=getattr(module, "EXAMPLES", None),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(s)
        s.set_defaults(_import=module.run, _no_splits=getattr(module, "NO_SPLITS", _NO_SPLITS))


def run(args: argparse.Namespace) -> int:
    report = args._import(args)
    report = asdict(report) if is_dataclass(report) else dict(report)
    written = {name: count for name, count in (report.get("splits") or {}).items() if count}
    if not written:
        report["splits_note"] = args._no_splits
    print(json.dumps({"dataset": args.dataset, "out": str(args.out), **report}))
    for note in report.get("notes", []):
        print(f"ditr import: note: {note}", file=sys.stderr)
    for warning in report.get("visibility_warnings", []) + report.get("warnings", []):
        print(f"ditr import: warning: {warning}", file=sys.stderr)
    if written:
        lists = ", ".join(f"{name}.txt ({count} scenes)" for name, count in written.items())
        print(f"ditr import: split lists in {args.out / 'splits'}: {lists}", file=sys.stderr)
    else:
        print(f"ditr import: {report['splits_note']}", file=sys.stderr)
    return 0
