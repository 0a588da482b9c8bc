"""Does a right occlusion test help DITR outdoors? ``none`` vs ``auto``, same budget, several seeds.

Outdoors the reference does no occlusion test: a LiDAR point that a camera cannot see, because a
pole or a car stands between them, takes the feature of the pixel it projects to, i.e. the
occluder's. ``projection.occlusion: auto`` runs the scan rule on scenes that say they come from a
LiDAR (docs/projection.md). This study trains DITR twice per seed on synthetic streets
(``ditr.io.synthetic.outdoor``: a 32-beam LiDAR, six cameras 0.7-1.0 m from it, so real parallax
occlusions) and compares the two arms:

* ``none``: every in-frame point-view counts as seen (the reference's outdoor rule);
* ``auto``: the scan rule decides (the default).

Data: streets of fixed seeds, disjoint training / validation / test sets (``--streets``), images at
``--width`` x ``--height``, 2D features cached once with ``--teacher``: by default ``demo-vit-streets``,
a tiny ViT trained on the camera images and 2D labels of other streets (``python -m
ditr.vfm.train_teacher --subject streets``; docs/demo-teacher.md), so that, like DINOv2, its patch
features carry what the pixel shows; ``dinov2-tiny-random-reg`` (random weights) gives features that
mostly carry colour. Run config: the ``nuscenes`` preset (outdoor recipe: [coord, strength]
input, z rotation / scale / flip / jitter / image flip / GridSample, Mix3D, the outdoor optimiser)
+ ``method/ditr``, with the streets' 10 classes, the tiny backbone and the small-CPU settings of
the ``synthetic`` preset (batch 2, no AMP, one data process); the grid is ``--grid``. The arms
differ only in ``projection.occlusion``. A seed fixes the initial weights and every data draw, so
the two runs of a seed see the same samples (paired comparison). Each model is scored after its
last step (no checkpoint selection) on the validation and on the test streets, with its own
occlusion rule; mIoU is over the classes present in that set's ground truth.

Reported per arm: mean and standard deviation over seeds of mIoU and per-class IoU; ``auto - none``
as the mean paired difference with a 95% t-interval (ditr.stats). And what each arm feeds the
network, from the data alone: the share of in-frame point-views kept as visible, the 3D-2D label
agreement (the point's class vs the rendered label image at its pixel) over kept point-views and
over the view each point takes its feature from (``view_strategy: last``), and the precision and
recall of "occluded" against the streets' ray-cast ground truth (``visibility_gt.npz``).

What a wrong projection transfers is the occluder's feature: with the trained teacher, its class as
the 2D model sees it (as with DINOv2); with the random one, mostly its colour.

    python benchmarks/occlusion_study.py --out occ/ [--seeds 3] [--steps 200]
    python benchmarks/occlusion_study.py --out occ/ --quick     # a smoke run (a few minutes)
    python benchmarks/occlusion_study.py --out occ/ --step-times 18   # time per step only, no study

``--step-times N`` trains seed 0 for N steps three times, one run at a time: ``none``, ``auto`` with
an empty correspondence cache (its first epoch projects every street) and ``auto`` again with the
cache filled (docs/projection.md#cached-correspondences), and prints each run's seconds per step.

Resumable: each (arm, seed) run is cached in ``OUT/results/`` once finished, and a rerun with the
same settings skips it (more ``--seeds`` adds runs). Prints one JSON line per run; writes the whole
study to ``OUT/occlusion_study.json`` and its per-class paired differences to
``OUT/per_class_difference.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see docs/performance.md: spin-waiting on a shared CPU
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/study.py, also when not run as a script

import numpy as np  # noqa: E402
import torch  # noqa: E402
from study import add_training_arguments, check_seeds, run_jobs, write_study  # noqa: E402

from ditr.configs import RunConfig, load_preset  # noqa: E402
from ditr.io.synthetic import room_seed  # noqa: E402
from ditr.io.synthetic.lidar import LidarConfig  # noqa: E402
from ditr.io.synthetic.outdoor import (CLASS_NAMES, DATASET_NAME, GENERATOR_VERSION, GT_FILE,  # noqa: E402
                                       generate_street)
from ditr.projection import project_scene  # noqa: E402
from ditr.scene import Scene  # noqa: E402
from ditr.stats import compare_arms, interval  # noqa: E402
from ditr.vfm.registry import get_spec  # noqa: E402
from ditr.viz.labels import plot_paired_differences  # noqa: E402
from ditr.vfm.extract import fill_scene_features  # noqa: E402

ARMS = ("none", "auto")
BASELINE = "none"
TEACHER = "demo-vit-streets"
SPLITS = ("val", "test")


def ensure_streets(directory: Path, count: int, seed: int, width: int, height: int,
                   azimuth_step: float) -> list[Path]:
    """Streets ``street_0000``... of the set ``seed``, generated only where missing or made otherwise.

    Street ``i`` has the seed ``room_seed(seed, i)``, as ``ditr synth --outdoor`` gives it."""
    paths = []
    for i in range(count):
        path = directory / f"street_{i:04d}"
        meta_file = path / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        street_seed = room_seed(seed, i)
        want = {"seed": street_seed, "generator_version": GENERATOR_VERSION,
                "image_size": [width, height], "azimuth_step_deg": azimuth_step}
        if any(meta.get(k) != v for k, v in want.items()):
            street = generate_street(street_seed, lidar=LidarConfig.velodyne(32, azimuth_step_deg=azimuth_step),
                                     width=width, height=height)
            street.scene.meta.update(name=path.name, image_size=[width, height], azimuth_step_deg=azimuth_step)
            street.save(path)
        paths.append(path)
    return paths


def transforms(grid: float) -> dict[str, list[dict[str, Any]]]:
    """The outdoor preset's training list at ``grid`` (no colour operations: the points have none),
    and one voxelisation mapped back to every point for evaluation."""
    return {
        "train": [{"type": "RandomRotate", "angle": [-1, 1], "axis": "z", "center": [0, 0, 0], "p": 0.5},
                  {"type": "RandomScale", "scale": [0.9, 1.1]},
                  {"type": "RandomFlip", "p": 0.5},
                  {"type": "RandomJitter", "sigma": 0.005, "clip": 0.02},
                  {"type": "ImageFlip", "p": 0.5},
                  {"type": "GridSample", "grid_size": grid, "mode": "train"}],
        "val": [{"type": "GridSample", "grid_size": grid, "mode": "train", "return_inverse": True}],
        "test": [{"type": "GridSample", "grid_size": grid, "mode": "train", "return_inverse": True}],
    }


def run_config(arm: str, seed: int, args: dict[str, Any], vfm: dict[str, Any]) -> RunConfig:
    """``nuscenes`` + ``method/ditr`` with the streets, the tiny backbone, the small-CPU settings and the arm."""
    overrides = [
        f"dataset.name={DATASET_NAME}", "dataset.splits={train: null, val: null, test: null}",
        f"dataset.num_classes={len(CLASS_NAMES)}", f"dataset.class_names=[{', '.join(CLASS_NAMES)}]",
        "images.resolution=null", f"vfm.model={args['teacher']}", f"vfm.cache={Path(args['out']) / 'features'}",
        f"vfm.precision={vfm['precision']}", "model.backbone=tiny", f"model.image_channels={vfm['feature_dim']}",
        f"projection.occlusion={arm}", f"optim.lr={args['lr']}",
        f"trainer.batch_size={args['batch_size']}", "trainer.epochs=null", f"trainer.max_steps={args['steps']}",
        "trainer.amp=null", "trainer.num_workers=0", f"trainer.seed={seed}", "trainer.plots=false",
        "trainer.log_every_steps=50",
    ]
    config = load_preset(["nuscenes", "method/ditr"], overrides)
    return config.merged({"transforms": transforms(args["grid"])}, "occlusion study transforms")


def scores(confusion: np.ndarray) -> dict[str, Any]:
    """mIoU over the classes present in the ground truth, and every class's IoU (None where absent)."""
    tp = np.diag(confusion).astype(float)
    gt, pred = confusion.sum(1), confusion.sum(0)
    present = gt > 0
    iou = tp / np.maximum(gt + pred - tp, 1)
    return {"miou": float(iou[present].mean()),
            "iou": {name: float(v) if p else None for name, v, p in zip(CLASS_NAMES, iou, present)}}


def run_one(arm: str, seed: int, args: dict[str, Any], streets: dict[str, list[str]], vfm: dict[str, Any],
            threads: int) -> dict[str, Any]:
    """Train one (arm, seed), then score its last model on the validation and test streets."""
    from ditr.training import evaluate, train

    torch.set_num_threads(threads)
    work_dir = Path(args["out"]) / "runs" / f"{arm}-seed{seed}"
    config = run_config(arm, seed, args, vfm)
    start = time.perf_counter()
    summary = train(config, work_dir, train_scenes=streets["train"], quiet=True, resume=False, restart=True)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"arm": arm, "seed": seed, "steps": int(summary["step"]),
                              "train_seconds": round(seconds, 1),
                              "step_seconds": round(seconds / max(int(summary["step"]), 1), 3)}
    start = time.perf_counter()
    for split in SPLITS:
        confusion = evaluate(work_dir / "last.pt", streets[split]).confusion.numpy()
        split_scores = scores(confusion)
        result[f"{split}_miou"] = split_scores["miou"]
        result[f"{split}_iou"] = split_scores["iou"]
        result[f"{split}_confusion"] = confusion.tolist()
    result["eval_seconds"] = round(time.perf_counter() - start, 1)
    return result


def time_steps(args: dict[str, Any], paths: list[str], vfm: dict[str, Any]) -> None:
    """Seconds per training step of ``none`` and of ``auto`` with a cold, then a warm correspondence cache."""
    from ditr.correspondence_cache import SUBFOLDER
    from ditr.training import train

    shutil.rmtree(Path(args["out"]) / "features" / SUBFOLDER, ignore_errors=True)
    for arm, cache in (("none", "-"), ("auto", "cold"), ("auto", "warm")):
        start = time.perf_counter()
        summary = train(run_config(arm, 0, args, vfm), Path(args["out"]) / "runs" / f"timing-{arm}-{cache}",
                        train_scenes=paths, quiet=True, resume=False, restart=True)
        steps = int(summary["step"])
        seconds = time.perf_counter() - start
        print(json.dumps({"bench": "occlusion_study", "case": "step_time", "arm": arm, "correspondence_cache": cache,
                          "steps": steps, "epochs": round(steps * args["batch_size"] / len(paths), 2),
                          "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
                          "step_seconds": round(seconds / max(steps, 1), 3)}), flush=True)


def feed(arm: str, paths: list[str], args: dict[str, Any], vfm: dict[str, Any]) -> dict[str, Any]:
    """What the arm's projection hands the network on ``paths``, measured against the streets' truth.

    Precision and recall of "occluded" count the point-views that both the projection and the
    ray-cast ground truth put in the image. ``label_agreement_fed`` takes per point the last view
    that keeps it (the feature the ``last`` view fusion injects); ``points_fed_fraction`` is the share
    of the points in some image that keep at least one view (the rest get no image feature)."""
    projection = run_config(arm, 0, args, vfm).projection
    kept = in_frame = agree = tp = called = occluded = fed = fed_agree = framed = 0
    for path in paths:
        scene = Scene.load(path)
        truth = np.load(Path(path) / GT_FILE)
        corr = project_scene(scene, projection)
        visible, frame = corr.visible.numpy(), corr.in_frame.numpy()
        both = frame & truth["in_frame"]
        called_here = both & ~visible
        occluded_here = both & ~truth["visible"]
        tp += int((called_here & occluded_here).sum())
        called += int(called_here.sum())
        occluded += int(occluded_here.sum())
        kept += int(visible.sum())
        in_frame += int(frame.sum())
        segment = scene.attributes["segment"]
        last_label = np.full(scene.num_points, -1)
        for i, view in enumerate(scene.views):
            seen = visible[i]
            uv = corr.uv[i].numpy()[seen].astype(np.int64)
            image = view.read_label()
            assert image is not None, f"{path}: view {view.name} has no label image"
            label = image[uv[:, 1].clip(0, view.height - 1), uv[:, 0].clip(0, view.width - 1)]
            agree += int((label == segment[seen]).sum())
            last_label[seen] = label
        has = visible.any(0)
        framed += int(frame.any(0).sum())
        fed += int(has.sum())
        fed_agree += int((last_label[has] == segment[has]).sum())
    return {"visible_fraction": kept / max(in_frame, 1), "label_agreement": agree / max(kept, 1),
            "label_agreement_fed": fed_agree / max(fed, 1), "points_fed_fraction": fed / max(framed, 1),
            "occluded_precision": tp / called if called else None,
            "occluded_recall": tp / occluded if occluded else None,
            "point_views_in_frame": in_frame, "points_fed": fed}


def per_class(results: list[dict[str, Any]], split: str) -> dict[str, Any]:
    """Per class and arm: the IoU over seeds; and ``auto - none`` paired (classes present in the split)."""
    table: dict[str, Any] = {}
    for name in CLASS_NAMES:
        rows = {arm: {r["seed"]: r[f"{split}_iou"][name] for r in results if r["arm"] == arm} for arm in ARMS}
        if any(v is None for arm_rows in rows.values() for v in arm_rows.values()):
            continue
        entry: dict[str, Any] = {arm: interval(list(v.values())) for arm, v in rows.items()}
        seeds = sorted(set(rows["auto"]) & set(rows[BASELINE]))
        entry[f"auto_minus_{BASELINE}"] = interval([rows["auto"][s] - rows[BASELINE][s] for s in seeds])
        table[name] = entry
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True,
                        help="streets, features, runs, cached results and occlusion_study.json go here")
    parser.add_argument("--seeds", type=int, default=3,
                        help="training seeds per arm (at least 2); raising it later adds runs")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run (the same for both arms)")
    parser.add_argument("--streets", type=int, nargs=3, default=[12, 4, 4], metavar=("TRAIN", "VAL", "TEST"),
                        help="streets per split (disjoint: consecutive streets of one set)")
    parser.add_argument("--street-seed", type=int, default=0, help="the street set (streets are room_seed(S, i))")
    parser.add_argument("--width", type=int, default=480, help="image width (the cameras keep their field of view)")
    parser.add_argument("--height", type=int, default=270)
    parser.add_argument("--azimuth-step", type=float, default=0.2, help="LiDAR azimuth step, degrees (32 beams)")
    parser.add_argument("--grid", type=float, default=0.1, help="GridSample voxel size, m")
    parser.add_argument("--teacher", default=TEACHER,
                        help=f"2D model whose patch features DITR gets (default {TEACHER}, shipped with ditr)")
    add_training_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 20 steps, 3/1/1 small streets")
    parser.add_argument("--step-times", type=int, metavar="N",
                        help="only time N training steps per arm, the cache of correspondences cold and warm")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.streets, args.width, args.height = 2, 20, [3, 1, 1], 240, 135
    check_seeds(parser, args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    n_train, n_val, _ = args.streets
    paths = [str(p) for p in ensure_streets(args.out / "streets", sum(args.streets), args.street_seed, args.width,
                                            args.height, args.azimuth_step)]
    streets = {"train": paths[:n_train], "val": paths[n_train:n_train + n_val], "test": paths[n_train + n_val:]}
    vfm = fill_scene_features(paths, args.teacher, args.out / "features")
    if args.step_times:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        time_steps({**settings, "steps": args.step_times}, streets["train"], vfm)
        return
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    # what a run's result depends on (not --out or --jobs), so a cached run is reused only under it
    stamp = {k: v for k, v in settings.items() if k not in ("out", "jobs", "seeds")}
    fed = {arm: {split: feed(arm, streets[split], settings, vfm) for split in ("train", *SPLITS)} for arm in ARMS}
    print(json.dumps({"feed": fed}), flush=True)
    jobs = [(arm, seed) for seed in range(args.seeds) for arm in ARMS]
    threads = max(1, torch.get_num_threads() // args.jobs)
    results = run_jobs(run_one, jobs, (settings, streets, vfm, threads), parallel=args.jobs,
                       cache=args.out / "results", stamp=stamp)
    keys = [f"{split}_miou" for split in SPLITS]
    weights = "random weights" if vfm["random_weights"] else get_spec(args.teacher).weights_note or vfm["weights"]
    study = {
        "settings": settings, "vfm": f"{args.teacher} ({weights})",
        "arms": list(ARMS),
        "config": "nuscenes + method/ditr, overrides in benchmarks/occlusion_study.py:run_config",
        "streets": {k: [Path(p).name for p in v] for k, v in streets.items()},
        "street_seeds": {k: [json.loads((Path(p) / "meta.json").read_text())["seed"] for p in v]
                         for k, v in streets.items()},
        "feed": fed, "runs": results,
        "summary": compare_arms(results, ARMS, keys, baseline=BASELINE, averages=("step_seconds",)),
        "per_class": {split: per_class(results, split) for split in SPLITS},
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": {"cpus": os.cpu_count(), "threads": threads, "torch": torch.__version__},
    }
    write_study(args.out / "occlusion_study.json", study)
    plot_study(study, args.out / "per_class_difference.png")


def plot_study(study: dict[str, Any], path: Path) -> Path:
    """Per-class ``auto - none`` with its 95% interval, validation and test streets (a forest plot)."""
    seeds = len({r["seed"] for r in study["runs"]})
    differences = {split: {name: (100 * d["mean"], 100 * d["ci95"][0], 100 * d["ci95"][1])
                           for name, entry in study["per_class"][split].items()
                           if (d := entry[f"auto_minus_{BASELINE}"])["ci95"] is not None}
                   for split in SPLITS}
    miou = {split: study["summary"]["auto"][f"{split}_miou_minus_{BASELINE}"] for split in SPLITS}
    names = {"val": "validation", "test": "test"}
    title = (f"occlusion auto - none, DITR on synthetic streets, {seeds} seeds\nmIoU: "
             + ", ".join(f"{names[split]} {100 * m['mean']:+.1f} [{100 * m['ci95'][0]:+.1f}, "
                         f"{100 * m['ci95'][1]:+.1f}]" for split, m in miou.items()))
    return plot_paired_differences({names[k]: v for k, v in differences.items()}, path, title)


if __name__ == "__main__":
    main()
