"""The demo's pictures: training curves of every run, the distilled student beside its teacher, and
the held-out view that shows where the methods' predictions differ most."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine.logging import read_jsonl
from ..errors import DitrError
from ..fileio import atomic_write

#: A view is a candidate for the prediction figure when it sees at least this share of the points
#: of the best-covered held-out view (views that see a corner of the room show little).
MIN_VISIBLE_SHARE = 0.5


def plot_curves(work_dirs: Mapping[str, Path], path: Path, title: str = "") -> Path:
    """Training loss and validation mIoU (%) against step, every run in one figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax_loss, ax_miou = fig.subplots(1, 2)
    for method, work_dir in work_dirs.items():
        records = read_jsonl(work_dir / "metrics.jsonl")
        train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
        val = [r for r in records if r.get("kind") == "val" and r.get("miou") is not None]
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=method)
        ax_miou.plot([r["step"] for r in val], [100 * r["miou"] for r in val], marker="o", label=method)
    ax_loss.set(xlabel="step", ylabel="training loss (CE + Lovasz)", title="training loss")
    ax_miou.set(xlabel="step", ylabel="mIoU (%)", title="mIoU (%) on the validation rooms during training")
    if title:
        fig.suptitle(title)
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    return path


@torch.no_grad()
def render_student_vs_teacher(checkpoint: str | Path, scene_dir: str | Path, path: str | Path,
                              title: str = "", device: str | torch.device = "cpu") -> Path:
    """Top-down PNG of one scene: the teacher's lifted features beside the distilled student's prediction.

    One PCA basis (fitted on the teacher's seen voxels) colours both panels
    (:func:`ditr.viz.pca.save_student_vs_teacher`), so equal colours mean similar features.
    """
    from ..distill import load_student, teacher_features
    from ..engine.losses import cosine_distill_loss
    from ..viz.pca import save_student_vs_teacher

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


@dataclass
class ChosenView:
    """The held-out (room, camera) of the prediction figure and why it was chosen."""

    room: Path
    view: int
    visible_points: int
    #: points that camera sees where ``better`` is right and ``worse`` wrong, and the reverse
    better_only: int
    worse_only: int


def choose_view(rooms: Sequence[Path], labels: Mapping[str, Mapping[str, np.ndarray]], better: str,
                worse: str) -> ChosenView:
    """The camera whose visible points show most where ``better`` is right and ``worse`` is wrong.

    Only views seeing at least :data:`MIN_VISIBLE_SHARE` of the best-covered view's points count,
    so the pick is a view of the room, not a close-up of a corner. ``labels[method][room name]``
    holds each method's (N,) predictions.
    """
    from ..projection import ProjectionConfig, project_scene
    from ..scene import Scene

    rows: list[ChosenView] = []
    for room in rooms:  # a handful of held-out rooms; each is vectorised over its views and points
        scene = Scene.load(room)
        gt = scene.segment()
        if gt is None or not scene.views:
            continue
        visible = project_scene(scene, ProjectionConfig()).visible.numpy().astype(np.int64)
        right_better, right_worse = labels[better][room.name] == gt, labels[worse][room.name] == gt
        counts = np.stack([visible.sum(1), visible @ (right_better & ~right_worse),
                           visible @ (right_worse & ~right_better)], 1)
        rows += [ChosenView(Path(room), v, *map(int, c)) for v, c in enumerate(counts)]
    if not rows:
        raise DitrError(f"{', '.join(str(r) for r in rooms)}: no held-out room has labels and views to draw")
    most = max(r.visible_points for r in rows)
    return max((r for r in rows if r.visible_points >= MIN_VISIBLE_SHARE * most),
               key=lambda r: (r.better_only, r.visible_points))
