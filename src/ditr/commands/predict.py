"""``ditr predict CHECKPOINT SCENE --out DIR``: labels for every point of a scene, with pictures."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ._options import MODEL_HELP, add_device_argument, add_model_arguments, load_options

NAME = "predict"
HELP = "Predict per-point classes of a scene with a trained model: labels, coloured PLY, renders, summary."
EXAMPLES = """examples:
  ditr predict runs/ditr-scannet/best.pt data/scannet/scene0011_00 --out pred/scene0011_00
  ditr predict model.ditr my_scan --out pred/my_scan --views all         # a bundle from ditr export
  ditr predict runs/ditr-scannet/best.pt big_scan --out pred/big --max-points 100000 --device cuda
  ditr predict runs/ptv3-scannet/best.pt scan --out pred/scan --tta      # vote over fragments + variants
  ditr predict d-ditr-scannet-ptv3 my_scan --out pred/my_scan --download  # a published model (ditr models)

Writes OUT/labels.npy (int64 per point), pred.ply (points coloured by class, with label and confidence
fields), classes.json + legend.png (per-class point counts), topdown.png, view_<name>.png (a few of the
scene's views with the labels over them) and summary.json (also printed): points seen by a camera,
chunks, seconds, and mIoU when the scene has ground truth in the model's classes. --html adds
pred.html, a 3D viewer in one file (open it in a browser; no server needed).

DITR models compute the views' image features online with the checkpoint's VFM (weights as in
ditr features: --set vfm.checkpoint=PATH), or read them from a feature cache with --features DIR.
Scenes of more than --max-points points are predicted in overlapping chunks (the memory budget)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("scene", type=Path, help="scene directory (coord.npy, views.json ...)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    add_device_argument(p)
    p.add_argument("--max-points", type=int, default=200_000, metavar="N",
                   help="the scene's points per model forward, the memory budget; a larger scene is cut into "
                        "overlapping chunks (default 200000: about 2.2 GB peak on the CPU with the ScanNet PTv3; "
                        "see docs/predict.md)")
    p.add_argument("--overlap", type=float, default=1.0, metavar="M",
                   help="metres of context around each chunk, voted over where chunks overlap (default 1.0)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: vote over every voxelisation fragment and test_time.variants")
    p.add_argument("--views", default=None, metavar="all|N",
                   help="views whose image features are used: all, or N evenly spaced "
                        "(default: as the model was evaluated, e.g. every (n // 10)-th of the n frames)")
    p.add_argument("--features", type=Path, default=None, metavar="DIR",
                   help="feature cache of ditr features (default: compute the features online)")
    p.add_argument("--set", action="append", default=[], metavar="key=value",
                   help="override a setting of the stored run config (e.g. vfm.checkpoint=weights/vitl.pth)")
    p.add_argument("--render-views", type=int, default=3, metavar="K",
                   help="views rendered with the labels over them (default 3; 0: none)")
    p.add_argument("--save-probs", action="store_true", help="also write probs.npy (N, C) float16")
    p.add_argument("--html", action="store_true",
                   help="also write pred.html, a self-contained 3D viewer (WebGL; up to 300k points embedded)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(p, deterministic=True)


def _views(value: str | None) -> str | int | None:
    from ..errors import DitrError

    if value is None or value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise DitrError(f"--views must be 'all' or a number, not {value!r}") from None


class _Bar:
    """A rich progress display on stderr: one bar per stage (projection, 2D features, chunks)."""

    def __init__(self, enabled: bool):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("[bold]{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                                 disable=not enabled)
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def run(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..errors import DitrError
    from ..inference import Predictor
    from ..model_files import read_model_file
    from ..predict import PredictOptions, write_outputs
    from ..scene import Scene

    start = time.perf_counter()
    if args.render_views < 0:
        raise DitrError(f"--render-views must be >= 0, got {args.render_views}")
    options = PredictOptions(max_points=args.max_points, overlap=args.overlap, tta=args.tta,
                             views=_views(args.views), features=args.features)
    device = resolve_device(args.device)
    model = read_model_file(args.checkpoint, load_options(args))
    predictor = Predictor.load(model, device, overrides=args.set, options=options)
    scene = Scene.load(args.scene, check_images=False)
    bar = _Bar(enabled=not args.quiet)
    with bar.progress:
        pred = predictor.predict(scene, options, progress=bar)
    for warning in pred.warnings:
        bar.console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    summary = write_outputs(args.out, scene, pred, predictor.config, source=str(args.checkpoint), options=options,
                            device=str(device), render_views=args.render_views, save_probs=args.save_probs,
                            html=args.html, elapsed=time.perf_counter() - start)
    for warning in summary["warnings"][len(pred.warnings):]:  # views that see no point
        bar.console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    print(json.dumps(summary))
    return 0
