"""``ditr demo``: synthetic rooms -> 2D features -> 3D-only PTv3 vs DITR vs D-DITR -> results and pictures."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

NAME = "demo"
HELP = "Run DITR end to end on synthetic rooms and compare it with a 3D-only PTv3 (results.json + pictures)."
EXAMPLES = """examples:
  ditr demo --smoke                     # a first look at every stage, about 2-3 minutes (not a result)
  ditr demo --quick                     # the demo: about 12-13 minutes on 2 CPU cores, offline
  ditr demo --out demo_full             # the longer run (more rooms, more steps)
  ditr demo --vfm dinov2-vits14-reg --checkpoint ~/weights/dinov2_vits14_reg4_pretrain.pth
  ditr demo --quick --distill-rooms 32 --distill-steps 1200 --distill-views mean
      (D-DITR pretrains on 32 more rooms whose labels it never reads; see docs/distillation.md)

Progress goes to stderr: a header per stage and a bar per task with elapsed time and ETA (plain
lines every 20 s when stderr is not a terminal). The runs go side by side in --workers processes.
Writes OUT/results.json ({"runs": {"3d-only": {"miou": 0.55, "iou": {"wall": 0.9, ...}}, "ditr": ...}, ...}:
mIoU and IoU as fractions in [0, 1], IoU by class name), OUT/per_class_iou.png, OUT/training_curves.png,
OUT/predictions_<room>.png, OUT/distillation_<room>.png; rooms, features and runs are kept in OUT
and reused (training resumes) when the command is run again. See docs/demo.md."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory (default demo_out)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="16 + 4 rooms, 400 steps per run (about 13 min on 2 cores)")
    size.add_argument("--smoke", action="store_true",
                      help="6 + 2 small rooms, 60 steps: checks every stage in about 2-3 min; its numbers are "
                           "not a result")
    p.add_argument("--seed", type=int, default=0, help="seed of the rooms and of training")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per method (default 60 smoke / 400 quick / 1200)")
    p.add_argument("--vfm", default=None, help="VFM name (default dinov2-tiny-random-reg: random weights, offline)")
    p.add_argument("--checkpoint", default=None, help="weights of the VFM (a Meta .pth or a Hugging Face directory)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes running the independent runs side by side (default: one per core, at "
                        "most 3); the results equal a run with --workers 1")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch in each process (default 1: the demo's models are tiny, and "
                        "one thread was 2-3x faster than two here)")
    g = p.add_argument_group("D-DITR pretraining (labels unused)")
    g.add_argument("--distill-rooms", type=int, default=None, metavar="N",
                   help="also distil on N extra unlabelled rooms (default 0)")
    g.add_argument("--distill-steps", type=int, default=None, metavar="S",
                   help="distillation steps (default: the fine-tuning budget, --steps)")
    g.add_argument("--distill-views", choices=["last", "mean"], default=None,
                   help="teacher targets: the last view that sees a voxel (reference) or the mean of all")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..demo import DemoSettings, run_demo
    from ..errors import DitrError

    if args.workers is not None and args.workers < 1:
        raise DitrError(f"--workers must be at least 1, got {args.workers}")
    torch.set_num_threads(max(1, args.threads))
    overrides = {"seed": args.seed}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.vfm is not None:
        overrides["vfm_model"] = args.vfm
    if args.checkpoint is not None:
        overrides["vfm_checkpoint"] = args.checkpoint
    for name in ("distill_rooms", "distill_steps", "distill_views"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.smoke:
        settings = DemoSettings.smoke(**overrides)
    elif args.quick:
        settings = DemoSettings.quick(**overrides)
    else:
        settings = dataclasses.replace(DemoSettings(), **overrides)
    results = run_demo(args.out, settings, quiet=args.quiet, workers=args.workers, threads=args.threads)
    if not args.quiet:
        print(summary(results, args.out), file=sys.stderr)
    print(json.dumps({m: {"miou": r["miou"]} for m, r in results["runs"].items()}
                     | {"results": str(args.out / "results.json")}))
    return 0


def summary(results: dict, out: Path) -> str:
    """The closing lines for people: held-out mIoU in percent, the time, where the files are, what it means."""
    runs = results["runs"]
    rooms = len(results["rooms"]["val"])
    lines = [f"held-out mIoU ({rooms} rooms, every point, final models), seed {results['settings']['seed']}:"]
    lines += [f"  {m:<8} {100 * r['miou']:5.1f}%" for m, r in runs.items()]
    minutes, seconds = divmod(int(results["seconds"]), 60)
    lines.append(f"done in {minutes} min {seconds:02d} s; results: {out / 'results.json'}; pictures: {out}/*.png")
    if results.get("note"):
        lines.append(results["note"])
    else:
        lines.append("One seed and a few rooms: differences of a few points are within seed noise (docs/demo.md).")
    return "\n".join(lines)
