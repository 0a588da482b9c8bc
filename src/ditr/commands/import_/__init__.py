"""``ditr import <dataset> SRC OUT``: convert a dataset's own layout into the ditr scene format.

One module per source format in this package, each defining ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> report`` (a dataclass or dict, printed as one JSON
line); adding a format means adding its module name to ``FORMATS``. The modules keep their heavy
imports inside ``run`` so that ``ditr --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import asdict, is_dataclass

NAME = "import"
HELP = "Import a dataset or your own capture from its own layout into ditr scene directories."
EXAMPLES = """examples:
  ditr import scannet /data/scannet_preprocessed scenes/
  ditr import DATASET --help        (each format's layout, options and examples)"""

FORMATS = ["scannet", "scannet_raw", "scannetpp", "semantickitti", "kitti", "nuscenes", "waymo", "colmap", "nerfstudio",
           "capture", "s3dis", "structured3d"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for module_name in FORMATS:
        module = importlib.import_module(f".{module_name}", __package__)
        s = sub.add_parser(module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           epilog=getattr(module, "EXAMPLES", None),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(s)
        s.set_defaults(_import=module.run)


def run(args: argparse.Namespace) -> int:
    report = args._import(args)
    report = asdict(report) if is_dataclass(report) else dict(report)
    print(json.dumps({"dataset": args.dataset, "out": str(args.out), **report}))
    for note in report.get("notes", []):
        print(f"ditr import: note: {note}", file=sys.stderr)
    for warning in report.get("visibility_warnings", []):
        print(f"ditr import: warning: {warning}", file=sys.stderr)
    return 0
