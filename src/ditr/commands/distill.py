"""``ditr distill CONFIG... [key=value ...]``: D-DITR stage 1, distil the VFM into a 3D-only PTv3."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._options import add_device_argument, add_model_arguments, load_options

NAME = "distill"
HELP = "D-DITR: distil frozen 2D features into a 3D-only PTv3 student (then fine-tune with ditr train --init)."
EXAMPLES = """examples:
  ditr distill scannet method/d-ditr dataset.root=data/scannet vfm.cache=feats --work-dir runs/dd-scannet
  ditr distill structured3d dataset.root=data/s3d vfm.cache=feats          # the preset distils already
  ditr distill scannet method/d-ditr 'distill.datasets=[{}, structured3d]' --work-dir runs/dd-multi
  ditr train scannet method/ptv3 dataset.root=data/scannet --init runs/dd-scannet/last.pt   # stage 2
  ditr distill --evaluate runs/dd-scannet/last.pt SCENE_DIR...       # teacher cosine on held-out scenes
  ditr distill --requirements runs/ptv3-ft/last.pt                     # what a checkpoint needs
  ditr distill --evaluate d-ditr-distill-scannet-dinov2-l SCENE_DIR... --download   # a published student

the reference's distillation runs (docs/distillation.md):
  ditr distill distill/scannet200 dataset.root=data/scannet vfm.cache=feats             # ScanNet200 alone
  ditr distill distill/scannet-structured3d dataset.root=data/scannet vfm.cache=feats   # + Structured3D
  ditr distill distill/nuscenes dataset.root=data/nuscenes vfm.cache=feats              # nuScenes alone
  ditr distill distill/outdoor dataset.root=data/nuscenes vfm.cache=feats   # + SemanticKITTI + Waymo

Features come from the cache of `ditr features` (or online with vfm.online=true). Each entry of
distill.datasets (a preset name, or a mapping of dataset/images/projection/transforms/mix3d/vfm
sections with an optional `preset` to start from; {} is the run's own data) is one source with
its own views and resolution. By default (distill.batching=per_dataset) every batch comes from one
source, the sources taking turns with distill.ratios consecutive batches each (default 1); an epoch
is one pass over the first source. distill.batching=mixed shuffles all sources together. Training
resumes from WORK_DIR/last.pt. After training, WORK_DIR/distill_eval.json holds the student's
cosine to the teacher on the val split (when the run has one)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("items", nargs="*", metavar="CONFIG|key=value",
                   help="presets / YAML files, then dotted key=value overrides (with --evaluate: CKPT SCENE...)")
    p.add_argument("--work-dir", type=Path, default=None, help="run directory (default runs/<config name>-distill)")
    p.add_argument("--no-resume", action="store_true", help="do not resume from WORK_DIR/last.pt")
    p.add_argument("--restart", action="store_true",
                   help="start over from step 0 when WORK_DIR's checkpoints are all damaged (else an error)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--evaluate", default=None, metavar="MODEL",
                   help="only evaluate this student's cosine to the teacher (on the scenes given, else its val split)")
    p.add_argument("--requirements", default=None, metavar="MODEL",
                   help="print what a checkpoint or .ditr bundle needs at inference (images or not, teacher, "
                        "classes) and exit")
    p.add_argument("--out", type=Path, default=None, help="write the JSON result here too")
    add_device_argument(p, "where the student is evaluated (--evaluate, and after training, which itself runs "
                           "on a CUDA GPU when torch sees one)")
    p.add_argument("--set", action="append", default=[], metavar="key=value",
                   help="with --evaluate: override a setting of the student's run config (vfm.cache=DIR: the "
                        "teacher's feature cache; vfm.online=true: run the teacher now)")
    add_model_arguments(p)


def _dump(result: Mapping[str, Any]) -> str:
    """One JSON line: tensors and NumPy scalars as numbers, NaN / inf as null."""
    from ..engine.logging import to_jsonable

    return json.dumps(to_jsonable(dict(result)))


def run(args: argparse.Namespace) -> int:
    from ..configs import load_preset
    from ..device import resolve_device
    from ..distill import distill, evaluate_distillation
    from ..errors import DitrError
    from ..fileio import atomic_write_json
    from ..model_files import checkpoint_requirements, read_model_file

    if args.requirements is not None:
        result = checkpoint_requirements(args.requirements, load_options(args))
        print(_dump(result))
        if args.out:
            atomic_write_json(args.out, result)
        return 0
    if args.evaluate is not None:
        student = read_model_file(args.evaluate, load_options(args))
        result = evaluate_distillation(student, args.items or None, device=resolve_device(args.device), out=args.out,
                                       overrides=getattr(args, "set", None) or ())
        print(_dump({k: v for k, v in result.items() if k != "per_scene"}))
        return 0
    presets = [i for i in args.items if "=" not in i]
    overrides = [i for i in args.items if "=" in i]
    if not presets:
        raise DitrError("name at least one preset or YAML file before the key=value overrides")
    config = load_preset(presets, overrides)
    work_dir = args.work_dir or Path("runs") / f"{config.name or Path(presets[0]).stem}-distill"
    summary = distill(config, work_dir, resume=not args.no_resume,
                      quiet=args.quiet, restart=getattr(args, "restart", False))
    result = {"work_dir": str(work_dir), **summary}
    if (Path(work_dir) / "last.pt").is_file() and summary.get("metrics") is not None:
        result["eval"] = {k: v for k, v in evaluate_distillation(
            Path(work_dir) / "last.pt", device=resolve_device(args.device),
            out=Path(work_dir) / "distill_eval.json").items() if k != "per_scene"}
    print(_dump(result))
    return 0
