"""``ditr demo``: the whole method end to end on synthetic rooms, with pictures.

1. Synthesise rooms (kept in ``OUT/rooms`` and reused by later runs with the same seed).
2. Extract 2D features of every view (and its mirror image) into ``OUT/features`` with a VFM: the
   tiny random-weight DINOv2 offline, a real checkpoint when given.
3. Train a 3D-only PTv3 and a DITR model with the same budget, and D-DITR: distil the 2D features
   into a 3D-only PTv3 (same step budget), then fine-tune it with the 3D-only recipe and budget.
   The 3D input is geometry only (position + normal): classes that differ in appearance alone (door, window, picture and
   whiteboard panels on the wall, rugs on the floor) can be told apart only through the images.
4. Evaluate all on held-out rooms (3d-only and d-ditr without images); write ``OUT/results.json``
   (docs/design.md#command-line), a per-class IoU chart, the training curves, top-down renders of ground truth vs the
   predictions, and the distilled student's features beside the teacher's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configs import RunConfig, load_preset
from .engine.logging import read_jsonl, to_jsonable
from .errors import DitrError
from .fileio import atomic_write_json
from .io.synthetic import CLASS_NAMES, ensure_rooms
from .scene import Scene
from .vfm.extract import fill_scene_features

Scenes = Sequence[str | Path]

#: The methods compared, with the preset fragment each merges onto ``synthetic``.
#: d-ditr fine-tunes with method/ptv3 from a student distilled first (ditr.distill).
METHODS = {"3d-only": "method/ptv3", "ditr": "method/ditr", "d-ditr": "method/ptv3"}


@dataclass
class DemoSettings:
    """Sizes and budget of a demo run; ``quick`` fits in about 10 minutes on 2 CPU cores."""

    train_rooms: int = 24
    val_rooms: int = 6
    points: int = 20000
    views: int = 8
    steps: int = 1200
    batch_size: int = 2
    lr: float = 0.004
    seed: int = 0
    vfm_model: str = "dinov2-tiny-random-reg"
    vfm_checkpoint: str | None = None
    #: D-DITR pretraining needs no labels: it may also distil on this many extra, unlabelled rooms,
    #: for ``distill_steps`` steps (default: ``steps``), with targets fused over views as
    #: ``distill_views`` ("last" = the reference's choice, "mean" = every view that sees a voxel).
    distill_rooms: int = 0
    distill_steps: int | None = None
    distill_views: str = "last"

    @classmethod
    def quick(cls, **overrides: Any) -> DemoSettings:
        return cls(**{**dict(train_rooms=16, val_rooms=4, points=12000, steps=400), **overrides})


def method_config(method: str, settings: DemoSettings, cache_dir: Path, feature_dim: int, precision: str,
                  steps_per_epoch: int) -> dict[str, Any]:
    """The synthetic preset + the method's fragment, with the demo's budget (equal for all methods)."""
    epochs = max(1, settings.steps // steps_per_epoch)
    overrides = [
        f"vfm.model={settings.vfm_model}", f"vfm.cache={cache_dir}", f"vfm.precision={precision}",
        f"trainer.batch_size={settings.batch_size}", f"trainer.epochs={epochs}",
        f"trainer.eval_every_epochs={max(1, epochs // 5)}", f"trainer.seed={settings.seed}",
        f"optim.lr={settings.lr}", "trainer.num_workers=0",
    ]
    if settings.vfm_checkpoint:
        overrides.append(f"vfm.checkpoint={settings.vfm_checkpoint}")
    if method == "ditr":
        overrides.append(f"model.image_channels={feature_dim}")
    return load_preset(["synthetic", METHODS[method]], overrides)


def _reset_runs_if_settings_changed(runs_dir: Path, settings: DemoSettings) -> None:
    """Training runs resume only under the settings they were started with: other settings (a new
    seed, budget or VFM) start them afresh. Rooms and features are content-keyed and stay."""
    import shutil

    stamp = runs_dir / "settings.json"
    current = to_jsonable(asdict(settings))
    if runs_dir.exists() and (not stamp.is_file() or json.loads(stamp.read_text()) != current):
        shutil.rmtree(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, current)


def plot_curves(work_dirs: dict[str, Path], path: Path) -> Path:
    """Training loss and validation mIoU against step, every method in one figure."""
    from matplotlib.figure import Figure

    from .fileio import atomic_write

    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax_loss, ax_miou = fig.subplots(1, 2)
    for method, work_dir in work_dirs.items():
        records = read_jsonl(work_dir / "metrics.jsonl")
        train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
        val = [r for r in records if r.get("kind") == "val" and r.get("miou") is not None]
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=method)
        ax_miou.plot([r["step"] for r in val], [100 * r["miou"] for r in val], marker="o", label=method)
    ax_loss.set(xlabel="step", ylabel="training loss (CE + Lovasz)", title="training loss")
    ax_miou.set(xlabel="step", ylabel="mIoU (%)", title="held-out rooms")
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.legend()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    return path


def demo_distill_config(base: RunConfig, feature_dim: int, rooms: int | None = None,
                        steps: int | None = None, view_strategy: str = "last") -> RunConfig:
    """The demo's distillation config: a 3D-only demo config + method/d-ditr.

    The budget is the base config's unless ``steps`` (with the number of distillation ``rooms``,
    which sets the steps per epoch) asks for another; ``view_strategy`` fuses the teacher's targets.
    """
    from .configs import preset_path
    from .configs.files import read_config_files

    config = base.merged(read_config_files([preset_path("method/d-ditr")]), "method/d-ditr over the demo config")
    config.distill.head_channels = int(feature_dim)
    config.images.view_strategy = view_strategy  # type: ignore[assignment]
    config.model.image_channels = None
    if steps is not None:
        if rooms is None:
            raise DitrError("demo_distill_config: steps needs the number of distillation rooms")
        per_epoch = -(-rooms // config.trainer.batch_size)
        config.trainer.epochs = max(1, steps // per_epoch)
        config.trainer.eval_every_epochs = max(1, config.trainer.epochs // 5)
    return config


def demo_distill(finetune_config: RunConfig, out: Path, feature_dim: int, train_rooms: Scenes,
                 val_rooms: Scenes, steps: int | None = None, view_strategy: str = "last", quiet: bool = False,
                 console: Any = None) -> tuple[Path, dict[str, Any]]:
    """``ditr demo``'s D-DITR stage 1 on ``train_rooms`` (labels unused: the training rooms plus any
    unlabelled ones), for ``steps`` (default: the fine-tuning run's budget), targets fused by ``view_strategy``.

    Returns the student checkpoint (the fine-tuning ``init``) and what the results row adds: the
    teacher cosine on the held-out rooms, the distillation steps and time, the picture's path.
    """
    from .distill import distill, evaluate_distillation

    work_dir = Path(out) / "runs" / "d-ditr-distill"
    config = demo_distill_config(finetune_config, feature_dim, len(train_rooms), steps, view_strategy)
    if console is not None:
        console.print(f"  distilling the 2D features into a 3D-only PTv3 ({work_dir})")
    t0 = time.perf_counter()
    summary = distill(config, work_dir, train_scenes=train_rooms, val_scenes=val_rooms, quiet=quiet)
    seconds = time.perf_counter() - t0
    checkpoint = work_dir / "last.pt"
    report = evaluate_distillation(checkpoint, val_rooms, out=work_dir / "distill_eval.json")
    first = Path(val_rooms[0])
    picture = render_student_vs_teacher(checkpoint, first, Path(out) / f"distillation_{first.name}.png",
                                        title=f"{first.name} (held out): teacher vs distilled student, one PCA basis")
    if console is not None:
        console.print(f"  student cosine to the teacher on held-out rooms: {report['cosine']:.3f}")
    return checkpoint, {"teacher_cosine": report["cosine"],
                        "teacher_cosine_per_room": {k: v["cosine"] for k, v in report["per_scene"].items()},
                        "distill_steps": summary["step"], "distill_rooms": len(train_rooms),
                        "distill_views": view_strategy, "distill_seconds": round(seconds, 1),
                        "distill_checkpoint": str(checkpoint), "picture": str(picture)}


@torch.no_grad()
def render_student_vs_teacher(checkpoint: str | Path, scene_dir: str | Path, path: str | Path,
                              title: str = "", device: str | torch.device = "cpu") -> Path:
    """Top-down PNG of one scene: the teacher's lifted features beside the distilled student's prediction.

    One PCA basis (fitted on the teacher's seen voxels) colours both panels
    (:func:`ditr.viz.pca.save_student_vs_teacher`), so equal colours mean similar features.
    """
    from .distill import load_student, teacher_features
    from .engine.losses import cosine_distill_loss
    from .viz.pca import save_student_vs_teacher

    predictors, teacher = load_student(checkpoint, device)
    batch = predictors[0].batch(scene_dir)
    pred = predictors[0].model(batch)["pred"].float().cpu()
    target = teacher_features(batch, teacher, torch.device(device)).float().cpu()
    seen = batch["img_seen"].cpu().bool()
    _, cos, _ = cosine_distill_loss(pred, target, seen)
    if not bool(seen.any()):
        raise DitrError(f"{scene_dir}: no voxel is seen by a view; nothing to compare")
    title = title or (f"{Path(scene_dir).name}: PCA of features (one basis, fitted on the teacher); "
                      "top-down, ceiling hidden")
    return save_student_vs_teacher(path, batch["coord"].cpu().numpy(), target, pred, seen, float(cos), title)


def run_demo(out: str | Path, settings: DemoSettings, quiet: bool = False) -> dict[str, Any]:
    """Run the demo into ``out``; returns (and writes) the results."""
    from rich.console import Console
    from rich.progress import Progress

    from .inference import Predictor
    from .training import evaluate, train
    from .viz.labels import plot_method_iou, render_label_comparison

    out = Path(out)
    console = Console(quiet=quiet)
    start = time.perf_counter()
    total = settings.train_rooms + settings.val_rooms + settings.distill_rooms
    with Progress(console=console, transient=True, disable=quiet) as progress:
        task = progress.add_task("rooms", total=total)
        rooms = ensure_rooms(out / "rooms", total, settings.seed, settings.points, settings.views,
                             on_room=lambda: progress.advance(task))
        task = progress.add_task("2D features", total=total * settings.views * 2)
        vfm = fill_scene_features(rooms, settings.vfm_model, out / "features", checkpoint=settings.vfm_checkpoint,
                                  on_progress=lambda n: progress.advance(task, n))
    labelled = settings.train_rooms + settings.val_rooms
    train_rooms, val_rooms = rooms[:settings.train_rooms], rooms[settings.train_rooms:labelled]
    unlabelled_rooms = rooms[labelled:]
    if vfm["random_weights"]:
        console.print(f"[yellow]{settings.vfm_model}: random weights, not real DINO features[/yellow]")
    steps_per_epoch = -(-settings.train_rooms // settings.batch_size)
    _reset_runs_if_settings_changed(out / "runs", settings)
    runs: dict[str, Any] = {}
    work_dirs = {m: out / "runs" / m for m in METHODS}
    predictions: dict[str, np.ndarray] = {}
    pictures_extra: dict[str, Path] = {}
    for method in METHODS:
        console.print(f"[bold]training {method}[/bold] ({settings.steps} steps budget)")
        config = method_config(method, settings, out / "features", vfm["feature_dim"], vfm["precision"],
                               steps_per_epoch)
        t0 = time.perf_counter()
        init = extra = None
        if method == "d-ditr":
            init, extra = demo_distill(config, out, vfm["feature_dim"], train_rooms + unlabelled_rooms, val_rooms,
                                       settings.distill_steps, settings.distill_views, quiet, console)
            pictures_extra["distillation"] = Path(extra.pop("picture"))
            t0 = time.perf_counter()
        summary = train(config, work_dirs[method], train_scenes=train_rooms, val_scenes=val_rooms, init=init,
                        quiet=quiet)
        seconds = time.perf_counter() - t0
        checkpoint = work_dirs[method] / "last.pt"
        result = evaluate(checkpoint, val_rooms)
        metrics = to_jsonable(result.metrics)
        runs[method] = {"miou": metrics["miou"], "macc": metrics["macc"], "allacc": metrics["allacc"],
                        "iou": dict(zip(CLASS_NAMES, metrics["iou"])), "steps": summary["step"],
                        "train_seconds": round(seconds, 1), "checkpoint": str(checkpoint),
                        "needs_images": config.kind.needs_images_at_inference, **(extra or {})}
        predictions[method] = Predictor.load(checkpoint).predict(val_rooms[0]).labels
        console.print(f"  {method}: mIoU {100 * metrics['miou']:.1f} on {len(val_rooms)} held-out rooms")
    pictures = {
        "per_class_iou": plot_method_iou({m: [r["iou"][c] for c in CLASS_NAMES] for m, r in runs.items()},
                                         CLASS_NAMES, out / "per_class_iou.png"),
        "training_curves": plot_curves(work_dirs, out / "training_curves.png"),
        **pictures_extra,
    }
    scene = Scene.load(val_rooms[0])
    pictures["predictions"] = render_label_comparison(
        scene, {"ground truth": scene.segment(), **predictions}, CLASS_NAMES,
        out / f"predictions_{scene.name}.png", view=0,
        title=f"{scene.name} (held out); 2D features: {settings.vfm_model}"
              + (" (random weights)" if vfm["random_weights"] else ""))
    results = {
        "runs": runs,
        "vfm": vfm,
        "settings": asdict(settings),
        "rooms": {"train": [p.name for p in train_rooms], "val": [p.name for p in val_rooms],
                  "unlabelled": [p.name for p in unlabelled_rooms]},
        "classes": list(CLASS_NAMES),
        "pictures": {k: str(v) for k, v in pictures.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_json(out / "results.json", to_jsonable(results))
    return results
