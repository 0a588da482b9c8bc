"""Image colour jitter from the feature cache: does it change DITR's accuracy, and what does it cost?

Three arms, trained with the same budget, seeds and data (``synthetic`` preset + ``method/ditr``, the
tiny random-weight VFM ``dinov2-tiny-random-reg``, rooms of ``ditr.io.synthetic.ensure_rooms``):

* ``none``: cached features, no colour jitter (the presets' default);
* ``cached-K``: the reference's jitter (0.4, 0.4, 0.2, 0.1, each view with p 0.5) drawn from K cached
  variants per image (``images.jitter_variants: K``, the cache filled with ``--jitter-variants K``);
* ``online``: the same jitter drawn afresh every time, the VFM run in every step (``vfm.online``).

A seed fixes the initial weights and every draw of the data pipeline (frames, 3D augmentations,
flips); the jitter draws come after those, so the arms of one seed differ only in the jitter (paired
comparison). Every model is scored after its last step (no checkpoint selection) on held-out
``val`` and ``test`` rooms, with the cached features of the plain images. Reported per arm: mean
and sample standard deviation over seeds; per arm against ``none``: the mean paired difference with
a 95% t-interval over seeds.

Costs: cache bytes and fill time per variant (the images and their mirrors), and training seconds
per step (wall and CPU, data loading included: ``num_workers`` 0) of each arm, plus the
extrapolation of the cache size to ScanNet with ViT-L.

The VFM has random weights: its features mostly encode local colour, so jitter perturbs them more
than it would perturb DINOv2's; the result says little about a real DINOv2.

    python benchmarks/jitter_study.py --out study/ [--seeds 3] [--steps 300] [--variants 4] [--jobs 1]
    python benchmarks/jitter_study.py --out study/ --quick     # a smoke run (a few minutes)

Prints one JSON object per line as runs finish; writes the whole study to ``OUT/jitter_study.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see docs/performance.md: spin-waiting on a shared CPU
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/study.py, also when not run as a script

import torch  # noqa: E402
from study import add_training_arguments, check_seeds, run_jobs, write_study  # noqa: E402

from ditr.cache import FeatureCache  # noqa: E402
from ditr.demo.settings import GEOMETRY_ONLY, RUNS, DemoSettings, run_config, uniform_lr  # noqa: E402
from ditr.io.synthetic import ensure_rooms  # noqa: E402
from ditr.stats import compare_arms  # noqa: E402
from ditr.vfm.color_jitter import REFERENCE_STRENGTH  # noqa: E402
from ditr.vfm.extract import fill_scene_features  # noqa: E402

#: ScanNet at the reference's setting: ViT-L/14 (1024 channels) at 420x560 = a 30 x 40 grid, fp16.
SCANNET_ENTRY_BYTES = 1024 * 30 * 40 * 2
#: Frames the reference's ScanNet pipeline exports: every 10th of the about 2.5 M frames of its 1513 scans.
SCANNET_FRAMES = 250_000


def arms(variants: int) -> list[str]:
    return ["none", f"cached-{variants}", "online"]


def arm_overrides(arm: str, variants: int) -> list[str]:
    jitter = f"images.color_jitter=[{', '.join(f'{x:g}' for x in REFERENCE_STRENGTH)}]"
    if arm == "none":
        return ["images.color_jitter=null"]
    if arm == "online":
        return [jitter, "images.color_jitter_p=0.5", "images.jitter_variants=0", "vfm.online=true"]
    return [jitter, "images.color_jitter_p=0.5", f"images.jitter_variants={variants}"]


def run_one(arm: str, seed: int, args: dict[str, Any], rooms: dict[str, list[str]], vfm: dict[str, Any],
            threads: int) -> dict[str, Any]:
    """Train one (arm, seed) and score it; runs in its own process when ``--jobs`` > 1."""
    from ditr.training import evaluate, train

    torch.set_num_threads(threads)
    out, cache = Path(args["out"]), Path(args["out"]) / "features"
    settings = DemoSettings(train_rooms=len(rooms["train"]), batch_size=args["batch_size"], lr=uniform_lr(args["lr"]),
                            steps=args["steps"], seed=seed, points=args["points"], views=args["views"],
                            teacher=vfm["model"])
    # The study was run with the geometry-only 3D input the demo had then (docs/jitter.md).
    spec = dataclasses.replace(RUNS["ditr"], input_features=GEOMETRY_ONLY)
    config = run_config(spec, settings, cache, {vfm["model"]: vfm["feature_dim"]}, vfm["precision"])
    config = config.with_overrides([*arm_overrides(arm, args["variants"]), "trainer.epochs=null",
                                    f"trainer.max_steps={args['steps']}", "trainer.plots=false",
                                    "trainer.log_every_steps=50"], "jitter study")
    work_dir = out / "runs" / f"{arm}-seed{seed}"
    start, cpu = time.perf_counter(), time.process_time()
    summary = train(config, work_dir, train_scenes=rooms["train"], quiet=True, resume=False, restart=True)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    scores = {}
    for split in ("val", "test"):  # every arm scored on the cached features of the plain images
        result = evaluate(work_dir / "last.pt", rooms[split], overrides=["vfm.online=false", f"vfm.cache={cache}"])
        scores[split] = float(result.metrics["miou"])
    steps = int(summary["step"])
    return {"arm": arm, "seed": seed, "steps": steps, "val_miou": scores["val"], "test_miou": scores["test"],
            "train_seconds": round(seconds, 1), "step_seconds": round(seconds / steps, 4),
            "step_cpu_seconds": round(cpu_seconds / steps, 4), "threads": threads,
            "loadavg_1min": round(os.getloadavg()[0], 2)}


def summarise(results: list[dict[str, Any]], variants: int) -> dict[str, Any]:
    """Per arm: score statistics and step times; per jitter arm: paired differences to ``none``."""
    return compare_arms(results, arms(variants), ("val_miou", "test_miou"), baseline="none",
                        averages=("step_seconds", "step_cpu_seconds"))


def cache_costs(cache_dir: Path, rooms: list[str], vfm_model: str, variants: int) -> dict[str, Any]:
    """Fill the cache (images + mirrors, then ``variants`` jittered variants of both) and measure it."""
    cache = FeatureCache(cache_dir)
    start = time.perf_counter()
    plain = fill_scene_features(rooms, vfm_model, cache_dir)
    plain_seconds = time.perf_counter() - start
    before = {p: p.stat().st_size for p in cache.entries()}
    start = time.perf_counter()
    fill_scene_features(rooms, vfm_model, cache_dir, jitter_variants=variants)
    variant_seconds = time.perf_counter() - start
    new = {p: p.stat().st_size for p in cache.entries() if p not in before}
    entry_bytes = statistics.fmean(before.values())
    return {
        "vfm": plain, "images": plain["images"] // 2, "entry_bytes": round(entry_bytes),
        "plain_and_flipped": {"entries": len(before), "bytes": sum(before.values()), "fill_seconds": plain_seconds},
        "per_variant": {"entries": len(new) / variants, "bytes": sum(new.values()) / variants,
                        "fill_seconds": variant_seconds / variants},
        "scannet_vitl_extrapolation": scannet_extrapolation(variants),
    }


def scannet_extrapolation(variants: int) -> dict[str, Any]:
    """Cache size on ScanNet with ViT-L at 420x560 (fp16): per variant, and with flips and K variants."""
    one = SCANNET_ENTRY_BYTES * SCANNET_FRAMES
    return {"frames": SCANNET_FRAMES, "entry_bytes": SCANNET_ENTRY_BYTES, "one_variant_tb": one / 1e12,
            "with_flips_tb": 2 * one / 1e12, f"with_flips_and_{variants}_variants_tb": 2 * (1 + variants) * one / 1e12}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="rooms, features, runs and jitter_study.json go here")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per arm (at least 2)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run (the same for every arm)")
    parser.add_argument("--variants", type=int, default=4, help="K of the cached-K arm")
    parser.add_argument("--train-rooms", type=int, default=12)
    parser.add_argument("--eval-rooms", type=int, default=4, help="rooms each of val and test")
    parser.add_argument("--points", type=int, default=12000)
    parser.add_argument("--views", type=int, default=8)
    add_training_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 20 steps, small rooms")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.train_rooms, args.eval_rooms, args.points = 2, 20, 4, 2, 4000
    check_seeds(parser, args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    total = args.train_rooms + 2 * args.eval_rooms
    paths = [str(p) for p in ensure_rooms(args.out / "rooms", total, 0, args.points, args.views)]
    rooms = {"train": paths[:args.train_rooms], "val": paths[args.train_rooms:args.train_rooms + args.eval_rooms],
             "test": paths[args.train_rooms + args.eval_rooms:]}
    costs = cache_costs(args.out / "features", paths, "dinov2-tiny-random-reg", args.variants)
    print(json.dumps({"costs": costs}), flush=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    jobs = [(arm, seed) for seed in range(args.seeds) for arm in arms(args.variants)]
    threads = max(1, torch.get_num_threads() // args.jobs)
    results = run_jobs(run_one, jobs, (settings, rooms, costs["vfm"], threads), parallel=args.jobs)
    study = {"settings": settings, "vfm": "dinov2-tiny-random-reg (random weights)", "color_jitter":
             {"strength": list(REFERENCE_STRENGTH), "p": 0.5}, "rooms": {k: [Path(p).name for p in v]
                                                                        for k, v in rooms.items()},
             "costs": costs, "runs": results, "summary": summarise(results, args.variants),
             "machine": {"cpus": os.cpu_count(), "torch": torch.__version__}}
    write_study(args.out / "jitter_study.json", study)


if __name__ == "__main__":
    main()
