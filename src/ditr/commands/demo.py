"""``ditr demo``: synthetic rooms -> 2D features -> 3D-only PTv3 vs DITR vs D-DITR -> results and pictures."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..demo.settings import DEMO_RUNS, RUNS, uniform_lr

NAME = "demo"
HELP = ("Run DITR end to end on synthetic rooms against a 3D-only PTv3 and D-DITR, over one seed or a study of "
        "several (results.json + pictures).")
EXAMPLES = """examples:
  ditr demo --smoke                     # a first look at every stage, about 1 minute (not a result)
  ditr demo --quick                     # the demo, one seed: about 6 minutes on 2 idle CPU cores, offline
  ditr demo --quick --seeds 5           # the study: 7 runs x 5 seeds, paired 95% intervals (about 1 hour)
  ditr demo --quick --runs 3d-only,3d-geometry-only --seeds 3
  ditr demo --out demo_full             # the longer settings (more rooms, more steps)
  ditr demo --quick --teacher dinov2-vits14-reg --checkpoint ~/weights/dinov2_vits14_reg4_pretrain.pth

Runs (all on colour + normal unless named): 3d-only, ditr, d-ditr (the demo); with --seeds N > 1 also
3d-geometry-only, ditr-random-teacher, d-ditr-random-teacher, d-ditr-same-total (the study).
The 2D teacher is demo-vit-rooms: a tiny ViT shipped with ditr, trained on other synthetic rooms with
2D labels (not a foundation model; docs/demo-teacher.md); the random-weight control is
dinov2-tiny-random-reg.

Progress goes to stderr: a header per stage and a bar per task with elapsed time and ETA (plain
lines every 20 s when stderr is not a terminal). Independent runs go side by side in --workers
processes. Writes OUT/results.json ({"runs": {"3d-only": {"miou": 0.55, "miou_std": ..., "iou":
{"wall": 0.9, ...}, "seeds": {...}}, ...}, "comparisons": {"ditr - 3d-only": {"mean", "ci95", ...}}}:
mIoU and IoU as fractions in [0, 1], IoU by class name), OUT/per_class_iou.png,
OUT/training_curves.png, OUT/predictions_<room>.png, OUT/distillation_<run>.png. Rooms, features and
runs are kept in OUT: a run with a result is not trained again and a run cut short resumes, so an
interrupted study goes on where it stopped. See docs/demo.md."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory (default demo_out)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="16 + 4 + 6 rooms, 200 steps per run (about 6 min on 2 idle cores)")
    size.add_argument("--smoke", action="store_true",
                      help="6 + 2 + 2 small rooms, 40 steps: checks every stage in about 1 min; its numbers are "
                           "not a result")
    p.add_argument("--seed", type=int, default=0, help="seed of the rooms and of training (the first seed)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="run seeds SEED .. SEED+N-1; N > 1 runs the study (every run; see --runs) and reports "
                        "paired differences with 95%% intervals")
    p.add_argument("--runs", default=None, metavar="R1,R2",
                   help=f"which runs, comma-separated (default {','.join(DEMO_RUNS)} for one seed, all for "
                        f"--seeds > 1): {', '.join(RUNS)}")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per run (default 40 smoke / 200 quick / 600)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate of every run (default: chosen on validation rooms per kind of run, "
                        "0.032 for 3d-only and ditr, 0.016 for d-ditr)")
    p.add_argument("--teacher", default=None,
                   help="2D model of the ditr and d-ditr runs (default demo-vit-rooms, shipped with ditr)")
    p.add_argument("--checkpoint", default=None, help="weights of --teacher (a Meta .pth or a Hugging Face directory)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes running the independent runs side by side (default: one per core, at "
                        "most 3); the results equal a run with --workers 1")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch in each process (default 1: the demo's models are tiny, and "
                        "one thread was 2-3x faster than two here)")
    g = p.add_argument_group("D-DITR pretraining (labels unused)")
    g.add_argument("--distill-rooms", type=int, default=None, metavar="N",
                   help="also distil on N extra unlabelled rooms (default 0)")
    g.add_argument("--distill-views", choices=["last", "mean"], default=None,
                   help="teacher targets: the last view that sees a voxel (reference) or the mean of all")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..demo import DemoSettings, run_demo
    from ..demo.results import closing_lines
    from ..errors import DitrError

    if args.workers is not None and args.workers < 1:
        raise DitrError(f"--workers must be at least 1, got {args.workers}")
    if args.seeds < 1:
        raise DitrError(f"--seeds must be at least 1, got {args.seeds}")
    torch.set_num_threads(max(1, args.threads))
    runs = (args.runs.split(",") if args.runs else list(DEMO_RUNS if args.seeds == 1 else RUNS))
    overrides: dict = {"seed": args.seed}
    if args.lr is not None:
        overrides["lr"] = uniform_lr(args.lr)
    for option, name in [("steps", "steps"), ("teacher", "teacher"), ("checkpoint", "teacher_checkpoint"),
                         ("distill_rooms", "distill_rooms"), ("distill_views", "distill_views")]:
        if getattr(args, option) is not None:
            overrides[name] = getattr(args, option)
    if args.smoke:
        settings = DemoSettings.smoke(**overrides)
    elif args.quick:
        settings = DemoSettings.quick(**overrides)
    else:
        settings = dataclasses.replace(DemoSettings(), **overrides)
    seeds = list(range(args.seed, args.seed + args.seeds))
    results = run_demo(args.out, settings, quiet=args.quiet, workers=args.workers, threads=args.threads,
                       runs=[r.strip() for r in runs], seeds=seeds)
    if not args.quiet:
        print("\n".join(closing_lines(results, str(args.out))), file=sys.stderr)
    print(json.dumps({r: {"miou": row["miou"]} for r, row in results["runs"].items()}
                     | {"results": str(args.out / "results.json")}))
    return 0
