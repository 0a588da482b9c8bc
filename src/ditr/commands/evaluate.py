"""``ditr evaluate CHECKPOINT DATA``: mIoU, per-class IoU and confusion matrix of a trained model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._options import MODEL_HELP, add_device_argument, add_model_arguments, load_options

NAME = "evaluate"
HELP = "Evaluate a trained checkpoint on scene directories (full-resolution mIoU, per-class IoU)."
EXAMPLES = """examples:
  ditr evaluate runs/ditr-scannet/best.pt data/scannet_val/
  ditr evaluate runs/demo/ditr/best.pt rooms/room_0010 rooms/room_0011 --out eval.json --plot iou.png
  ditr evaluate runs/ditr-scannet/best.pt data/scannet_val/ --tta        # the paper's test-time voting

DATA are scene directories, or directories holding scene directories. Image features are read
from the feature cache the model was trained with, looked for where it was recorded, relative to
the folder training ran in and beside the checkpoint (one line says which); --set vfm.cache=DIR
gives it (docs/predict.md#paths-recorded-in-a-model).

Printed on stdout and written by --out as JSON: {"miou", "macc", "allacc": fractions in [0, 1],
"iou", "acc": {class name: fraction} in class order (null: class absent), ...}; --out adds the
confusion matrix (rows ground truth). The line on stderr and the --plot chart show percent."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("data", type=Path, nargs="+", help="scene directories or directories of scenes")
    p.add_argument("--set", action="append", default=[], metavar="key=value",
                   help="override a setting of the stored run config (e.g. vfm.cache=feats)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: vote over every voxelisation fragment and the preset's "
                        "test_time.variants (indoor: 4 rotations x 3 scales + a flip)")
    add_device_argument(p)
    p.add_argument("--out", type=Path, default=None, help="write the metrics as JSON here")
    p.add_argument("--plot", type=Path, default=None, help="write a per-class IoU bar chart (PNG) here")
    add_model_arguments(p, deterministic=True)


def scene_dirs(paths: list[Path]) -> list[Path]:
    from ..scene import COORD_FILE

    found: list[Path] = []
    for path in paths:
        found += [path] if (path / COORD_FILE).is_file() else sorted(p.parent for p in path.glob(f"*/{COORD_FILE}"))
    return found


def run(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..engine.logging import plot_class_iou, to_jsonable
    from ..errors import DitrError
    from ..fileio import atomic_write_json
    from ..model_files import read_model_file
    from ..training import evaluate

    scenes = scene_dirs(args.data)
    if not scenes:
        raise DitrError(f"no scene directories (with coord.npy) in {', '.join(map(str, args.data))}")
    model = read_model_file(args.checkpoint, load_options(args))
    result = evaluate(model, scenes, tta=args.tta, device=resolve_device(args.device), overrides=args.set)
    report = to_jsonable({"checkpoint": str(args.checkpoint), "scenes": len(scenes), "tta": args.tta,
                          **result.metrics})
    if args.out:
        atomic_write_json(args.out, {**report, "confusion": result.confusion.tolist()})
    if args.plot:
        plot_class_iou(result.metrics["iou"], args.plot, title=f"per-class IoU, {args.checkpoint}")
    print(f"mIoU {100 * result.metrics['miou']:.1f}%  mAcc {100 * result.metrics['macc']:.1f}%  "
          f"allAcc {100 * result.metrics['allacc']:.1f}% on {len(scenes)} scenes", file=sys.stderr)
    print(json.dumps(report))
    return 0
