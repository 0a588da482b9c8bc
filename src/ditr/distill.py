"""D-DITR (DESIGN 1.4): distil a frozen 2D foundation model into a plain 3D PTv3, then fine-tune it.

Stage 1, :func:`distill`: a :class:`DistillStudent` (a 3D-only PTv3 backbone + ``distill_head =
Linear(out_channels, D)``) regresses, for every voxel, the VFM feature lifted onto it by the usual
projection pipeline (the teacher's ``img_table`` from the feature cache, or the frozen VFM run
online on the batch's ``images``). The loss is the mean over voxels seen by at least one view of
``1 - cos(pred, target)``; unseen voxels do not count. Several data sets can be distilled in one run
(``distill.datasets``: each source its own dataset, views and resolution). The loop is the training
engine's (:class:`~ditr.engine.trainer.Trainer`: resume, DDP, progress, logs, checkpoints);
validation reports the mean cosine similarity (``val_cosine``) and keeps ``best.pt`` by it.

Stage 2 is ordinary 3D-only training (``method/ptv3``) with ``init=`` the student checkpoint:
:func:`load_init` copies the ``backbone.*`` weights, drops ``distill_head.*`` and leaves the new
``seg_head`` at its initialisation. The fine-tuned model never reads images.
:func:`checkpoint_requirements` says what a checkpoint needs at inference (images or not).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset

from .data import SceneDataset, collate, input_channels
from .data.config import merge
from .engine.checkpoint import CheckpointError
from .engine.checkpoint import load_checkpoint as load_train_state
from .engine.evaluator import as_output
from .engine.loading import move_to
from .engine.optim import OptimConfig
from .engine.trainer import Trainer
from .errors import DitrError
from .image_features import batch_image_table
from .lifting import lookup_image_features
from .models.ptv3 import PointTransformerV3, PTv3Config

Scenes = Sequence[str | Path]
STUDENT = "d-ditr"
#: Run-config sections a distillation source may set for itself (the rest is the run's).
SOURCE_SECTIONS = ("dataset", "images", "projection", "transforms", "mix3d", "vfm")


# ------------------------------------------------------------------------------------------ model
class DistillStudent(nn.Module):
    """A 3D-only PTv3 whose final decoder features are mapped to the teacher's width.

    ``forward(batch) -> {"pred": (N, D)}``. State-dict keys: ``backbone.*`` (those of
    :class:`~ditr.models.ptv3.PTv3Segmentor`, so a segmentor fine-tunes from them) and
    ``distill_head.*`` (dropped at fine-tuning).
    """

    def __init__(self, config: PTv3Config, head_channels: int) -> None:
        super().__init__()
        if config.image_channels is not None:
            raise DitrError("the D-DITR student takes no image input (model.image_channels must be null)")
        self.backbone = PointTransformerV3(config)
        self.distill_head = nn.Linear(self.backbone.config.out_channels, int(head_channels))

    @property
    def config(self) -> PTv3Config:
        return self.backbone.config

    def forward(self, data: Mapping[str, Any]) -> dict[str, Tensor]:
        point = self.backbone({k: v for k, v in data.items() if k != "image_feat"})
        return {"pred": self.distill_head(point.feat)}


def head_channels(config: Mapping[str, Any]) -> int:
    """D of the distillation head: ``distill.head_channels``, else ``model.image_channels``."""
    d = (config.get("distill") or {}).get("head_channels") or (config.get("model") or {}).get("image_channels")
    if not d:
        raise DitrError("distill.head_channels is not set (the teacher's feature width, e.g. 1024 for ViT-L)")
    return int(d)


# ------------------------------------------------------------------------------------------ loss
def cosine_distill_loss(pred: Tensor, target: Tensor, seen: Tensor) -> tuple[Tensor, Tensor, int]:
    """(mean of 1 - cos over seen voxels, mean cos, number of seen voxels); unseen voxels are ignored.

    A batch in which no voxel is seen gives a zero loss that still depends on ``pred`` (so DDP and
    the optimizer see a graph) and a NaN cosine.
    """
    seen = seen.to(pred.device).bool()
    count = int(seen.sum())
    if count == 0:
        return pred.sum() * 0.0, torch.tensor(float("nan"), device=pred.device), 0
    cos = F.cosine_similarity(pred[seen].float(), target[seen].to(pred.device).float(), dim=1, eps=1e-8)
    return (1.0 - cos).mean(), cos.mean().detach(), count


def teacher_features(batch: Mapping[str, Any], teacher: Any = None, device: torch.device | None = None) -> Tensor:
    """(N, D) lifted teacher features of a batch: cached table, or the frozen VFM on ``images``
    (``teacher``: the online :class:`~ditr.image_features.ImageFeatureSource` of :func:`load_teacher`)."""
    table = batch_image_table(batch, teacher, "distillation teacher")
    device = device or table.device
    return lookup_image_features(table.to(device), batch["img_index"].to(device), batch["img_weight"].to(device))


class DistillCriterion:
    """``criterion(output, batch) -> {"loss", "cosine"}`` for the engine (teacher not trained, not saved)."""

    def __init__(self, teacher: Any = None) -> None:
        self.teacher = teacher

    def __call__(self, output: Mapping[str, Tensor], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        pred = output["pred"]
        target = teacher_features(batch, self.teacher, pred.device)
        loss, cos, _ = cosine_distill_loss(pred, target, batch["img_seen"])
        return {"loss": loss, "cosine": cos}


class DistillTrainer(Trainer):
    """The engine's loop with a cosine evaluation instead of the segmentation metrics."""

    def eval_step(self, batch: Any) -> Mapping[str, Any]:
        output = as_output(self.evaluator.model(batch))
        losses = self.criterion(output, batch)
        return {"losses": {k: v for k, v in losses.items() if torch.isfinite(v)}}

    def _record_eval(self, result: Any) -> bool:
        if "val_cosine" in result.metrics:
            self._bar.print(f"step {self.step}: teacher cosine {result.metrics['val_cosine']:.4f}")
        return super()._record_eval(result)


# ------------------------------------------------------------------------------------------ data
def source_configs(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One run config per distillation source (``distill.datasets``; the run's own data if unset).

    An entry is a preset name / YAML file (its dataset, images, projection, transforms and mix3d
    sections; the teacher and cache stay the run's) or a mapping of those sections plus ``vfm``
    (e.g. its own ``vfm.cache``); either is merged over the run config.
    Every source reads images (its teacher targets); all must share the teacher and the 3D input.
    """
    from .configs import load_preset

    entries = (config.get("distill") or {}).get("datasets") or [{}]
    sources = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            # A preset brings its data sections but not vfm: teacher, cache and precision stay the run's.
            fragment = {k: v for k, v in load_preset([entry]).items() if k in SOURCE_SECTIONS and k != "vfm"}
        elif isinstance(entry, Mapping):
            unknown = sorted(set(entry) - set(SOURCE_SECTIONS))
            if unknown:
                raise DitrError(f"distill.datasets[{i}]: unknown sections {unknown} (allowed: {list(SOURCE_SECTIONS)})")
            fragment = dict(entry)
        else:
            raise DitrError(f"distill.datasets[{i}]: a preset name or a mapping, not {entry!r}")
        source = merge(config, fragment)
        source.setdefault("images", {})["enabled"] = True
        sources.append(source)
    first = sources[0]
    for i, s in enumerate(sources[1:], 1):
        for key, what in ((("vfm", "model"), "teacher (vfm.model)"), (("dataset", "input_features"), "3D input")):
            a, b = first.get(key[0], {}).get(key[1]), s.get(key[0], {}).get(key[1])
            if a != b:
                raise DitrError(f"distill.datasets[{i}]: {what} {b!r} differs from the first source's {a!r}")
    return sources


def distill_datasets(config: Mapping[str, Any], train_scenes: Scenes | None = None,
                     val_scenes: Scenes | None = None) -> tuple[Dataset, Dataset | None]:
    """Training and validation sets over all sources (concatenated); explicit scenes: one source."""
    sources = source_configs(config)
    if train_scenes is not None:
        if len(sources) > 1:
            raise DitrError("explicit scene lists go with a single source (distill.datasets unset)")
        train = SceneDataset(list(train_scenes), None, sources[0], "train")
        val = SceneDataset(list(val_scenes), None, sources[0], "val") if val_scenes else None
        return train, val
    trains, vals = [], []
    for s in sources:
        trains.append(SceneDataset.from_config(s, "train"))
        if (s.get("dataset", {}).get("splits") or {}).get("val") is not None:
            vals.append(SceneDataset.from_config(s, "val"))
    concat = lambda sets: sets[0] if len(sets) == 1 else ConcatDataset(sets)  # noqa: E731
    return concat(trains), (concat(vals) if vals else None)


def load_teacher(config: Mapping[str, Any]) -> Any:
    """The frozen VFM (an online image-feature source) when some source computes its features
    online (``vfm.online``), else None."""
    online = [s for s in source_configs(config) if s.get("vfm", {}).get("online")]
    if not online:
        return None
    from .image_features import ImageFeatureSource

    vfm = online[0]["vfm"]
    device = vfm.get("device", "auto")  # the teacher runs where vfm.device says (the model's VFM: "auto")
    return ImageFeatureSource(vfm, (online[0].get("images") or {}).get("resolution"), device=device,
                              preprocess_device=device)


def _check_student_config(config: Mapping[str, Any]) -> None:
    name = (config.get("model") or {}).get("name")
    if name != STUDENT:
        raise DitrError(f"ditr distill needs model.name {STUDENT} (merge method/d-ditr), not {name!r}")


# ------------------------------------------------------------------------------------------ stage 1
def distill(config: Mapping[str, Any], work_dir: str | Path, *, train_scenes: Scenes | None = None,
            val_scenes: Scenes | None = None, resume: bool = True, quiet: bool = False,
            callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Distil the teacher into a D-DITR student in ``work_dir`` (resuming there); the Trainer summary."""
    from .training import fit, model_from_config, trainer_config

    config = copy.deepcopy(dict(config))
    _check_student_config(config)
    torch.manual_seed(int(config.get("trainer", {}).get("seed", 0)))
    model = model_from_config(config)
    train_set, val_set = distill_datasets(config, train_scenes, val_scenes)
    settings = trainer_config(config, work_dir, quiet)
    if "best_metric" not in config.get("trainer", {}):
        settings.best_metric, settings.best_mode = "val_cosine", "max"
    trainer = DistillTrainer(model, DistillCriterion(load_teacher(config)), train_set, settings,
                             collate_fn=collate, val_set=val_set, val_collate_fn=collate,
                             optim=OptimConfig.from_dict(config.get("optim", {})), callbacks=callbacks,
                             run_config=config)
    return fit(trainer, resume)


def load_student(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[DistillStudent, dict[str, Any]]:
    """The distilled student of a ``ditr distill`` checkpoint and its run config."""
    from .training import model_from_config

    state = load_train_state(checkpoint)
    config = state.get("config") or {}
    _check_student_config(config)
    model = model_from_config(config)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config


@torch.no_grad()
def evaluate_distillation(checkpoint: str | Path, scenes: Scenes | None = None, *,
                          device: str | torch.device = "cpu", out: str | Path | None = None) -> dict[str, Any]:
    """Cosine similarity of the student to the teacher on ``scenes`` (default: the run's val sets).

    ``cosine`` is the mean over all seen voxels of all scenes; ``per_scene`` the mean of each.
    Written to ``out`` (JSON) when given.
    """
    model, config = load_student(checkpoint, device)
    teacher = load_teacher(config)
    if scenes is not None:
        dataset: Dataset = SceneDataset(list(scenes), None, source_configs(config)[0], "val")
    else:
        _, val = distill_datasets(config)
        if val is None:
            raise DitrError("no scenes given and the run config has no validation split")
        dataset = val
    total, weighted, per_scene = 0, 0.0, {}
    for i in range(len(dataset)):
        batch = move_to(collate([dataset[i] if not isinstance(dataset, SceneDataset)
                                 else dataset.get(i, np.random.default_rng(0))]), torch.device(device))
        pred = model(batch)["pred"]
        target = teacher_features(batch, teacher, pred.device)
        _, cos, count = cosine_distill_loss(pred, target, batch["img_seen"])
        per_scene[batch["name"][0]] = {"cosine": float(cos), "seen_voxels": count,
                                       "voxels": int(batch["img_seen"].numel())}
        total += count
        weighted += float(cos) * count if count else 0.0
    state = load_train_state(checkpoint)
    result = {"checkpoint": str(checkpoint), "step": state.get("step"), "teacher": config.get("vfm", {}).get("model"),
              "cosine": weighted / total if total else float("nan"), "seen_voxels": total,
              "scenes": len(per_scene), "per_scene": per_scene}
    if out is not None:
        from .fileio import atomic_write_json

        atomic_write_json(Path(out), result)
    return result


# ------------------------------------------------------------------------------------------ stage 2
def load_init(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Initialise ``model`` from a checkpoint's matching weights (same name and shape); a report.

    Heads of another shape (other classes) are skipped and reported; backbone tensors of another
    shape (another backbone) are an error rather than a silently partial initialisation.

    Accepts a ditr training state (``ditr train`` / ``ditr distill``: the student's ``backbone.*``
    loads, ``distill_head.*`` is dropped, a new ``seg_head`` stays as initialised), a checkpoint
    directory of :func:`ditr.models.checkpoint.save_checkpoint`, or a reference-format file
    (``{"state_dict": ...}`` with ``module.`` / ``backbone.`` / ``seg_head.`` keys, mapped by
    :func:`ditr.models.checkpoint.convert_reference_state_dict`).
    """
    from .models.checkpoint import WEIGHTS_FILE, convert_reference_state_dict

    path = Path(path)
    if path.is_dir() and (path / WEIGHTS_FILE).is_file():
        from safetensors.torch import load_file

        state, fmt = dict(load_file(str(path / WEIGHTS_FILE))), "ditr.ptv3"
    else:
        try:
            state, fmt = load_train_state(path)["model"], "ditr.train_state"
        except CheckpointError:
            try:
                raw = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise DitrError(f"{path}: cannot read as an initialisation checkpoint ({exc})") from None
            state, _ = convert_reference_state_dict(raw, model)
            fmt = "reference"
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    skipped = sorted(k for k in state if k not in usable)
    clash = [k for k in skipped if k in own and k.startswith("backbone.")]
    if clash or not usable:
        raise DitrError(f"{path}: its backbone does not fit this model ({len(clash)} tensors of another shape, "
                        f"e.g. {clash[:3]}); was it trained with the same model.backbone / input features?")
    model.load_state_dict(usable, strict=False)
    return {"path": str(path), "format": fmt, "loaded": len(usable),
            "new": sorted(k for k in own if k not in usable), "skipped": skipped,
            "mismatched": sorted(k for k in skipped if k in own)}


def checkpoint_requirements(path: str | Path) -> dict[str, Any]:
    """What a ``ditr train`` / ``ditr distill`` checkpoint needs: images or not, teacher, classes, inputs."""
    from .training import needs_images

    state = load_train_state(path)
    config = state.get("config") or {}
    model = config.get("model") or {}
    data = config.get("dataset") or {}
    name = model.get("name", "ditr")
    images = needs_images(config)
    reads_images = name in ("ditr", STUDENT)
    features = list(data.get("input_features", ["color", "normal"]))
    report = {
        "checkpoint": str(path), "model": name,
        "task": "distillation" if name == STUDENT else "segmentation",
        "needs_images": images,                 # at inference
        "needs_images_for_training": reads_images,
        "vfm": (config.get("vfm") or {}).get("model") if reads_images else None,
        "feature_dim": None if not reads_images else (head_channels(config) if name == STUDENT
                                                      else model.get("image_channels")),
        "backbone": model.get("backbone", "scannet"),
        "input_features": features, "in_channels": input_channels(features),
        "num_classes": None if name == STUDENT else data.get("num_classes"),
        "classes": None if name == STUDENT else data.get("class_names"),
        "step": state.get("step"), "total_steps": state.get("total_steps"),
        "init": config.get("init"),
    }
    return report


def save_requirements(path: str | Path, out: str | Path) -> dict[str, Any]:
    from .fileio import atomic_write_json

    report = checkpoint_requirements(path)
    atomic_write_json(Path(out), report)
    return report


# ------------------------------------------------------------------------------------------ picture
@torch.no_grad()
def render_student_vs_teacher(checkpoint: str | Path, scene_dir: str | Path, path: str | Path,
                              title: str = "", device: str | torch.device = "cpu") -> Path:
    """Top-down PNG of one scene: teacher lifted features | student prediction, one PCA basis.

    The basis is fitted on the teacher's seen voxels and applied to both, so equal colours mean
    similar features; unseen voxels are grey in the teacher panel (no target) and coloured in the
    student's (it predicts everywhere).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from .fileio import atomic_write
    from .viz.pca import pca_basis, pca_colors

    model, config = load_student(checkpoint, device)
    dataset = SceneDataset([scene_dir], None, source_configs(config)[0], "val")
    batch = move_to(collate([dataset.get(0, np.random.default_rng(0))]), torch.device(device))
    pred = model(batch)["pred"].float().cpu()
    target = teacher_features(batch, load_teacher(config), torch.device(device)).float().cpu()
    seen = batch["img_seen"].cpu().bool()
    _, cos, _ = cosine_distill_loss(pred, target, seen)
    if not bool(seen.any()):
        raise DitrError(f"{scene_dir}: no voxel is seen by a view; nothing to compare")
    basis = pca_basis(target[seen])
    coord = batch["coord"].cpu().numpy()
    teacher_rgb = np.full((len(coord), 3), 128, np.uint8)
    teacher_rgb[seen.numpy()] = pca_colors(target[seen], basis)
    student_rgb = pca_colors(pred, basis)
    z = coord[:, 2]
    below = z < z.max() - 0.25  # hide the ceiling so the floor, furniture and walls show from above
    order = np.argsort(z)
    order = order[below[order]] if below.any() else order
    fig = Figure(figsize=(12, 6.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, rgb, name in ((axes[0], teacher_rgb, "teacher: lifted 2D features (grey: unseen)"),
                          (axes[1], student_rgb, f"student: predicted from 3D only (cos {float(cos):.3f} on seen)")):
        ax.scatter(coord[order, 0], coord[order, 1], c=rgb[order] / 255.0, s=3, linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(title or f"{Path(scene_dir).name}: PCA of features (one basis, fitted on the teacher); top-down, ceiling hidden", fontsize=11)
    return atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=100))


# ------------------------------------------------------------------------------------------ demo
def demo_distill_config(base: Mapping[str, Any], feature_dim: int, rooms: int | None = None,
                        steps: int | None = None, view_strategy: str = "last") -> dict[str, Any]:
    """The demo's distillation config: a 3D-only demo config + method/d-ditr.

    The budget is the base config's unless ``steps`` (with the number of distillation ``rooms``,
    which sets the steps per epoch) asks for another; ``view_strategy`` fuses the teacher's targets.
    """
    from .configs import load_preset

    config = merge(base, load_preset(["method/d-ditr"]))
    config["distill"]["head_channels"] = int(feature_dim)
    config["images"]["enabled"] = True
    config["images"]["view_strategy"] = view_strategy
    config["model"]["image_channels"] = None
    if steps is not None:
        if rooms is None:
            raise DitrError("demo_distill_config: steps needs the number of distillation rooms")
        per_epoch = -(-rooms // int(config["trainer"]["batch_size"]))
        config["trainer"]["epochs"] = max(1, steps // per_epoch)
        config["trainer"]["eval_every_epochs"] = max(1, config["trainer"]["epochs"] // 5)
    return config


def demo_distill(finetune_config: Mapping[str, Any], out: Path, feature_dim: int, train_rooms: Scenes,
                 val_rooms: Scenes, steps: int | None = None, view_strategy: str = "last", quiet: bool = False,
                 console: Any = None) -> tuple[Path, dict[str, Any]]:
    """``ditr demo``'s D-DITR stage 1 on ``train_rooms`` (labels unused: the training rooms plus any
    unlabelled ones), for ``steps`` (default: the fine-tuning run's budget), targets fused by ``view_strategy``.

    Returns the student checkpoint (the fine-tuning ``init``) and what the results row adds: the
    teacher cosine on the held-out rooms, the distillation steps and time, the picture's path.
    """
    import time

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


def dump(result: Mapping[str, Any]) -> str:
    from .engine.logging import to_jsonable

    return json.dumps(to_jsonable(dict(result)))
