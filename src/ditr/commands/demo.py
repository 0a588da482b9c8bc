"""``ditr demo``: synthetic rooms -> 2D features -> 3D-only PTv3 vs DITR -> results and pictures."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

NAME = "demo"
HELP = "Run DITR end to end on synthetic rooms and compare it with a 3D-only PTv3 (results.json + pictures)."
EXAMPLES = """examples:
  ditr demo --quick                     # about 10 minutes on 2 CPU cores, offline
  ditr demo --out demo_full             # the longer run (more rooms, more steps)
  ditr demo --vfm dinov2-vits14-reg --checkpoint ~/weights/dinov2_vits14_reg4_pretrain.pth
  ditr demo --quick --distill-rooms 32 --distill-steps 1200 --distill-views mean
      (D-DITR pretrains on 32 more rooms whose labels it never reads; see docs/distillation.md)

Writes OUT/results.json ({"runs": {"3d-only": {"miou": ...}, "ditr": {"miou": ...}}, ...}),
OUT/per_class_iou.png, OUT/training_curves.png, OUT/predictions_<room>.png; rooms, features and
runs are kept in OUT and reused (training resumes) when the command is run again."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory (default demo_out)")
    p.add_argument("--quick", action="store_true", help="fewer, smaller rooms and a shorter budget (~10 min)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rooms and of training")
    p.add_argument("--steps", type=int, default=None, help="training steps per method (default 400 quick / 1200)")
    p.add_argument("--vfm", default=None, help="VFM name (default dinov2-tiny-random-reg: random weights, offline)")
    p.add_argument("--checkpoint", default=None, help="weights of the VFM (a Meta .pth or a Hugging Face directory)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (default 1: the demo's models are tiny, and one thread "
                        "was 2-3x faster than two here)")
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
    settings = DemoSettings.quick(**overrides) if args.quick else dataclasses.replace(DemoSettings(), **overrides)
    results = run_demo(args.out, settings, quiet=args.quiet)
    print(json.dumps({m: {"miou": r["miou"]} for m, r in results["runs"].items()}
                     | {"results": str(args.out / "results.json")}))
    return 0
