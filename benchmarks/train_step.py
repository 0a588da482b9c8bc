"""Training-iteration cost of 3D-only PTv3 vs DITR with cached features vs DITR with the VFM online.

One iteration = what ``Trainer.train_step`` does (forward, CE + Lovasz loss, backward, AdamW step,
OneCycle step) on a fixed batch of 2 samples; data loading is excluded (the batch is built once).
All three cases run in the same process on the same points (two synthetic rooms from
``ditr.io.synthetic.ensure_rooms``, the ``synthetic`` preset's training transforms) and their steps are
interleaved, so each sees the same background load. Per case: median (``value``) and best of the
timed steps after warm-up, and the CPU seconds per step (both threads together, load-independent).

* ``3d-only``: ``method/ptv3`` (no images); the batch's image fields are ignored by the model.
* ``ditr-cached``: ``method/ditr``, the batch carries the patch-feature table read from the cache.
* ``ditr-online``: ``vfm.online=true``: the batch carries the views' network inputs and the frozen
  VFM runs inside every step (no gradient through it).

The VFM is ``dinov2-tiny-random-reg`` by default (width 32, the demo's); ``--vfm dinov2-vits14-reg``
(or any registered name) uses the real architecture with a seeded random init saved to a temporary
Hugging Face directory (speed does not depend on the weights; nothing is downloaded), and fills the
cache with it, so the cached table has the real width. ``--full`` adds the PTv3 ScanNet config
(``model.backbone=scannet``, 46M parameters) on the same batch.

    python benchmarks/train_step.py --quick            # tiny PTv3, tiny VFM (about a minute)
    python benchmarks/train_step.py --vfm dinov2-vits14-reg --full
    python benchmarks/train_step.py --quick --profile  # + torch.profiler tables on stderr
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# On a shared CPU, OpenMP's default spin-waiting makes every parallel region wait for threads whose
# core is busy elsewhere (see docs/performance.md); must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ditr.configs import RunConfig  # noqa: E402
from ditr.data import collate  # noqa: E402
from ditr.demo.settings import RUNS, DemoSettings, run_config  # noqa: E402
from ditr.io.synthetic import ensure_rooms  # noqa: E402
from ditr.vfm.extract import fill_scene_features  # noqa: E402
from ditr.engine.losses import SegmentationCriterion  # noqa: E402
from ditr.engine.trainer import Trainer  # noqa: E402
from ditr.training import datasets_from_config, model_from_config, trainer_config  # noqa: E402

CASES = ("3d-only", "ditr-cached", "ditr-online")


def emit(case: str, metric: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"bench": "train_step", "case": case, "metric": metric, "value": round(value, 4),
                      "unit": unit, **extra}), flush=True)


def vfm_settings(name: str, points: int, views: int, scratch: Path) -> DemoSettings:
    """Demo settings for ``name``: tiny names resolve to their seeded random init; a real-size
    architecture without local weights gets a seeded random init saved as an HF directory."""
    from ditr.errors import DitrError
    from ditr.vfm import get_spec, load_vfm
    from ditr.vfm.loading import build_random

    settings = DemoSettings(points=points, views=views, teacher=name)
    try:
        load_vfm(name)
    except DitrError:
        path = scratch / "vfm" / name
        if not (path / "config.json").is_file():
            build_random(get_spec(name)).save_pretrained(path)
        settings.teacher_checkpoint = str(path)
    return settings


def case_config(case: str, settings: DemoSettings, cache: Path, vfm: dict[str, Any], backbone: str) -> RunConfig:
    config = run_config(RUNS["3d-only" if case == "3d-only" else "ditr"], settings, cache,
                        {settings.teacher: vfm["feature_dim"]}, vfm["precision"])
    config.trainer.epochs, config.trainer.max_steps, config.trainer.plots = None, 10_000, False
    config.model.backbone = backbone
    if case == "ditr-online":
        config.vfm.online = True
    return config


def make_batch(config: RunConfig, rooms: list[Path], seed: int) -> dict[str, Any]:
    dataset, _ = datasets_from_config(config, rooms)
    return collate([dataset.get(i, np.random.default_rng([seed, i])) for i in range(len(rooms))])


def make_trainer(config: RunConfig, rooms: list[Path], work_dir: Path) -> Trainer:
    torch.manual_seed(0)
    model = model_from_config(config)
    train_set, _ = datasets_from_config(config, rooms)
    criterion = SegmentationCriterion(**dataclasses.asdict(config.loss), ignore_index=config.dataset.ignore_index)
    return Trainer(model, criterion, train_set, trainer_config(config, work_dir, quiet=True),
                   collate_fn=collate, optim=config.optim)


def timed_step(trainer: Trainer, batch: dict[str, Any]) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train_step(batch)
    return time.perf_counter() - start, time.process_time() - cpu


def profile(trainers: dict[str, Trainer], batches: dict[str, dict], steps: int, rows: int) -> None:
    """Operator tables (self CPU time) of each case on stderr."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for case, trainer in trainers.items():
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            for _ in range(steps):
                trainer.train_step(batches[case])
        print(f"# profile {case} ({steps} steps)", file=sys.stderr)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows), file=sys.stderr, flush=True)


def bench(backbone: str, cases: dict[str, RunConfig], rooms: list[Path], scratch: Path, args: argparse.Namespace,
          vfm_name: str) -> None:
    batches = {case: make_batch(config, rooms, args.seed) for case, config in cases.items()}
    # The 3D-only model gets the cached case's batch (same points; it ignores the image fields).
    batches["3d-only"] = batches["ditr-cached"]
    trainers = {case: make_trainer(config, rooms, scratch / "runs" / backbone / case)
                for case, config in cases.items() if case in args.cases}
    params = {case: sum(p.numel() for p in t.model.parameters()) for case, t in trainers.items()}
    for _ in range(args.warmup):
        for case, trainer in trainers.items():
            trainer.train_step(batches[case])
    wall: dict[str, list[float]] = {c: [] for c in trainers}
    cpu: dict[str, list[float]] = {c: [] for c in trainers}
    for _ in range(args.repeats):
        for case, trainer in trainers.items():
            w, c = timed_step(trainer, batches[case])
            wall[case].append(w)
            cpu[case].append(c)
    for case in trainers:
        batch = batches[case]
        extra: dict[str, Any] = {
            "model": backbone, "points": int(batch["coord"].shape[0]), "samples": len(rooms),
            "params": params[case], "best": round(min(wall[case]), 4), "steps": len(wall[case]),
            "cpu_s": round(statistics.median(cpu[case]), 4), "threads": torch.get_num_threads(),
            "loadavg_1min": round(os.getloadavg()[0], 2),
        }
        if case != "3d-only":
            extra.update(vfm=vfm_name, feature_dim=cases[case].model.image_channels,
                         views=int(batch["view_valid"].shape[0]) if "view_valid" in batch else None)
        emit(case, "iter_s", statistics.median(wall[case]), "s", **extra)
    if not {"3d-only", "ditr-cached"} <= set(trainers):
        return
    ratio = statistics.median(wall["ditr-cached"]) / statistics.median(wall["3d-only"])
    emit("ditr-cached/3d-only", "ratio", ratio, "x", model=backbone, goal=1.2,
         best=round(min(wall["ditr-cached"]) / min(wall["3d-only"]), 4),
         cpu=round(statistics.median(cpu["ditr-cached"]) / statistics.median(cpu["3d-only"]), 4))
    if args.profile:
        profile(trainers, batches, args.profile_steps, args.profile_rows)
    for trainer in trainers.values():
        trainer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny PTv3 only, fewer steps (about a minute on 2 cores)")
    parser.add_argument("--full", action="store_true", help="also the PTv3 ScanNet config (model.backbone=scannet)")
    parser.add_argument("--vfm", default="dinov2-tiny-random-reg",
                        help="VFM for the cache and the online case (random init when no weights are found)")
    parser.add_argument("--rooms", type=Path, default=None, help="where the synthetic rooms and features go "
                        "(default: a temporary directory)")
    parser.add_argument("--points", type=int, default=20000, help="points per synthetic room (before voxelisation)")
    parser.add_argument("--views", type=int, default=8, help="views per room (the preset uses up to 8 per sample)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per case (default 10, quick 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case first")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES),
                        help="cases to time (the ratio needs 3d-only and ditr-cached)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="torch.profiler operator tables on stderr")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--profile-rows", type=int, default=25)
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 5 if args.quick else 10
    backbones = ["tiny"] + (["scannet"] if args.full and not args.quick else [])

    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ditr-train-step-")))
        data_dir = args.rooms or scratch
        rooms = ensure_rooms(data_dir / "rooms", 2, args.seed, args.points, args.views)
        settings = vfm_settings(args.vfm, args.points, args.views, data_dir)
        t0 = time.perf_counter()
        vfm = fill_scene_features(rooms, settings.teacher, data_dir / "features",
                                  checkpoint=settings.teacher_checkpoint)
        print(f"# {args.vfm}: {vfm['source'] if 'source' in vfm else vfm['weights']}, width {vfm['feature_dim']}, "
              f"{vfm['computed']} of {vfm['images']} cache entries computed in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
        for backbone in backbones:
            cases = {case: case_config(case, settings, data_dir / "features", vfm, backbone) for case in CASES
                     if case in args.cases or case == "ditr-cached"}  # its batch is 3d-only's
            bench(backbone, cases, rooms, scratch, args, args.vfm)


if __name__ == "__main__":
    main()
