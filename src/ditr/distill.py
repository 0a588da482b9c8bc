"""D-DITR (docs/design.md#d-ditr-distillation): distil a frozen 2D foundation model into a plain 3D PTv3, then
fine-tune it.

Stage 1, :func:`distill`: a :class:`~ditr.models.student.DistillStudent` (a 3D-only PTv3 backbone +
``distill_head = Linear(out_channels, D)``) regresses, for every voxel, the VFM feature lifted onto
it by the usual projection pipeline (the teacher's ``img_table`` from the feature cache, or the
frozen VFM run online on the batch's ``images``). The loss is the mean over voxels seen by at least
one view of ``1 - cos(pred, target)`` (:func:`~ditr.engine.losses.cosine_distill_loss`); unseen
voxels do not count. Several data sets can be distilled in one run (``distill.datasets``: each
source its own dataset, views and resolution); by default every batch comes from one source, the
sources taking turns in the ratios ``distill.ratios`` (:func:`train_sampler`). The loop is the
training engine's (:class:`~ditr.engine.trainer.Trainer`: resume, DDP, progress, logs, checkpoints);
validation reports the mean cosine similarity (``val_cosine``) and keeps ``best.pt`` by it.

Stage 2 is ordinary 3D-only training (``method/ptv3``) with ``init=`` the student checkpoint:
:func:`ditr.model_files.load_init` copies the ``backbone.*`` weights, drops ``distill_head.*`` and
leaves the new ``seg_head`` at its initialisation. The fine-tuned model never reads images.
:func:`ditr.model_files.checkpoint_requirements` says what a model file needs at inference (images or not).

This module is the distillation workflow only: the teacher and criterion, the trainer, the source
configs and data sets, :func:`distill`, :func:`load_student` (the student behind the inference
service, :class:`ditr.inference.Predictor`) and :func:`evaluate_distillation`. The student model is built
by :mod:`ditr.build`; the demo's distillation stage and its picture are in :mod:`ditr.demo`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from .build import model_from_config
from .configs import ModelKind, RunConfig
from .data import SceneDataset, collate
from .data.dataset import config_scenes
from .engine.evaluator import as_output
from .engine.loading import SourceSampler
from .engine.losses import cosine_distill_loss
from .engine.trainer import SamplerFactory, Trainer
from .errors import DitrError
from .image_features import ImageFeatureSource, batch_image_table
from .inference import Predictor
from .lifting import lookup_image_features
from .model_files import ModelFile, load_model, read_model_file
from .training import fit, record_scene_folder, trainer_config

Scenes = Sequence[str | Path]
#: Run-config sections a distillation source may set for itself (the rest is the run's).
SOURCE_SECTIONS = ("dataset", "images", "projection", "transforms", "mix3d", "vfm")


# ------------------------------------------------------------------------------------------ teacher and loss
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
def source_configs(config: RunConfig) -> list[RunConfig]:
    """One run config per distillation source (``distill.datasets``; the run's own data if unset).

    An entry is a preset name / YAML file (its dataset, images, projection, transforms and mix3d
    sections; the teacher and cache stay the run's) or a mapping of those sections plus ``vfm``
    (e.g. its own ``vfm.cache``), optionally with ``preset``: a preset whose sections it starts
    from (``{preset: structured3d, transforms: {...}}`` changes only the preset's augmentations).
    Either is merged over the run config (a ``dataset.splits`` given replaces the run's whole split
    map, so no mode of the run leaks into another data set); ``{}`` is the run's own data.
    Every source reads images (its teacher targets); all must share the teacher and the 3D input.
    """
    from .configs import load_preset
    from .configs.files import merge

    entries = config.distill.datasets or [{}]
    sources = []
    for i, entry in enumerate(entries):
        sections = {"preset": entry} if isinstance(entry, str) else dict(entry)
        name = sections.pop("preset", None)
        unknown = sorted(set(sections) - set(SOURCE_SECTIONS))
        if unknown:
            raise DitrError(f"distill.datasets[{i}]: unknown sections {unknown} (allowed: preset, "
                            f"{', '.join(SOURCE_SECTIONS)})")
        fragment: dict[str, Any] = {}
        if name is not None:
            # A preset brings its data sections but not vfm: teacher, cache and precision stay the run's.
            preset = load_preset([name]).to_dict()
            fragment = {k: v for k, v in preset.items() if k in SOURCE_SECTIONS and k != "vfm"}
        fragment = merge(fragment, sections)
        values = config.to_dict()
        if "splits" in fragment.get("dataset", {}):  # a source's split map is its own, none of the run's modes
            values["dataset"]["splits"] = {}
        sources.append(RunConfig.from_dict(merge(values, fragment), f"distill.datasets[{i}]"))
    first = sources[0]
    for i, s in enumerate(sources[1:], 1):
        for a, b, what in ((first.vfm.model, s.vfm.model, "teacher (vfm.model)"),
                           (first.dataset.input_features, s.dataset.input_features, "3D input")):
            if a != b:
                raise DitrError(f"distill.datasets[{i}]: {what} {b!r} differs from the first source's {a!r}")
    return sources


def distill_datasets(config: RunConfig, train_scenes: Scenes | None = None,
                     val_scenes: Scenes | None = None) -> tuple[Dataset, Dataset | None]:
    """Training and validation sets over all sources (concatenated); explicit scenes: one source.

    A mixed batch (``distill.batching: mixed``) holds samples of several sources; with the online
    teacher their images are stacked, which needs one image size: an error before any work when the
    sources' ``images.resolution`` differ.
    """
    sources = source_configs(config)
    if train_scenes is not None:
        if len(sources) > 1:
            raise DitrError("explicit scene lists go with a single source (distill.datasets unset)")
        train = SceneDataset(list(train_scenes), None, sources[0], "train")
        val = SceneDataset(list(val_scenes), None, sources[0], "val") if val_scenes else None
        return train, val
    resolutions = {str(s.images.resolution) for s in sources}
    if config.distill.batching == "mixed" and len(resolutions) > 1 and any(s.vfm.online for s in sources):
        raise DitrError(f"distill.batching: mixed with the online teacher stacks images of the sources' resolutions "
                        f"{sorted(resolutions)} in one batch: use distill.batching: per_dataset, or cached features")
    trains, vals = [], []
    for s in sources:
        trains.append(SceneDataset.from_config(s, "train"))
        if s.dataset.splits.get("val") is not None:
            vals.append(SceneDataset.from_config(s, "val"))
    concat = lambda sets: sets[0] if len(sets) == 1 else ConcatDataset(sets)  # noqa: E731
    return concat(trains), (concat(vals) if vals else None)


def train_sampler(config: RunConfig, train_set: Dataset) -> SamplerFactory | None:
    """The training order of several sources with ``distill.batching: per_dataset``: every batch from
    one source, ``distill.ratios`` (default 1 each) consecutive batches per source in turn, an
    epoch being one pass over the first source (:class:`~ditr.engine.loading.SourceSampler`).
    None (the engine's shuffle over everything) for one source or ``mixed`` batches."""
    if config.distill.batching != "per_dataset" or not isinstance(train_set, ConcatDataset):
        return None
    sizes = [len(d) for d in train_set.datasets]  # type: ignore[arg-type]  # map-style datasets have __len__
    return functools.partial(SourceSampler, sizes, config.distill.ratios or [1] * len(sizes))


def load_teacher(config: RunConfig) -> ImageFeatureSource | None:
    """The frozen VFM (an online image-feature source, on ``vfm.device``) when some source computes
    its features online (``vfm.online``), else None."""
    online = [s for s in source_configs(config) if s.vfm.online]
    if not online:
        return None
    vfm = online[0].vfm
    return ImageFeatureSource(dataclasses.asdict(vfm), online[0].images.resolution, device=vfm.device,
                              preprocess_device=vfm.preprocess_device)


def check_student_config(config: RunConfig) -> None:
    """An error unless ``config`` is a D-DITR student's (``model.name: d-ditr``)."""
    if config.kind is not ModelKind.D_DITR:
        raise DitrError(f"ditr distill needs model.name {ModelKind.D_DITR.value} (merge method/d-ditr), "
                        f"not {config.kind.value!r}")


# ------------------------------------------------------------------------------------------ stage 1
def distill(config: RunConfig | Mapping[str, Any], work_dir: str | Path, *, train_scenes: Scenes | None = None,
            val_scenes: Scenes | None = None, resume: bool = True, quiet: bool = False,
            callbacks: Sequence[Any] = (), restart: bool = False) -> dict[str, Any]:
    """Distil the teacher into a D-DITR student in ``work_dir`` (resuming there); the Trainer summary.

    ``restart``: start over when ``work_dir`` holds checkpoints of which none is readable (else an error)."""
    config = RunConfig.coerce(config).copy()
    check_student_config(config)
    torch.manual_seed(config.trainer.seed)
    model = model_from_config(config)
    train_set, val_set = distill_datasets(config, train_scenes, val_scenes)
    record_scene_folder(config, train_scenes)
    settings = trainer_config(config, work_dir, quiet)
    if settings.best_metric == "miou":  # a segmentation metric: the student is judged by its cosine
        settings.best_metric, settings.best_mode = "val_cosine", "max"
    trainer = DistillTrainer(model, DistillCriterion(load_teacher(config)), train_set, settings,
                             collate_fn=collate, val_set=val_set, val_collate_fn=collate,
                             optim=config.optim, callbacks=callbacks, run_config=config.to_dict(),
                             sampler=train_sampler(config, train_set))
    return fit(trainer, resume, restart)


def load_student(checkpoint: str | Path | ModelFile, device: str | torch.device = "cpu",
                 overrides: Sequence[str] = (), need_root: bool = False
                 ) -> tuple[list[Predictor], ImageFeatureSource | None]:
    """A distilled student behind the inference service, and its teacher.

    One :class:`~ditr.inference.Predictor` per distillation source (:func:`source_configs`: its
    data settings, the one model shared), whose batches carry the teacher's feature table: from the
    cache, or the frozen VFM run online (the returned teacher, None when every source is cached).
    ``overrides`` (``key=value``) adjust the stored run config first. The feature cache (and with
    ``need_root`` the dataset root) recorded at training is found on this machine
    (:func:`ditr.stored_paths.locate`).
    """
    from .stored_paths import cache_needed, given_keys, locate

    file = checkpoint if isinstance(checkpoint, ModelFile) else read_model_file(checkpoint)
    check_student_config(file.run_config())

    def prepare(config: RunConfig) -> RunConfig:
        config = config.with_overrides(list(overrides), "--set")
        keys = cache_needed(config, teacher=True) + (["dataset.root"] if need_root else [])
        return locate(config, file.place, keys, given_keys(overrides), str(file))

    model, config = load_model(file, device, prepare=prepare)
    teacher = load_teacher(config)
    return [Predictor(model, s, device, features=teacher if s.vfm.online else None)
            for s in source_configs(config)], teacher


@torch.no_grad()
def evaluate_distillation(checkpoint: str | Path | ModelFile, scenes: Scenes | None = None, *,
                          device: str | torch.device = "cpu", out: str | Path | None = None,
                          overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Cosine similarity of the student to the teacher on ``scenes`` (default: the run's val sets).

    ``cosine`` is the mean over all seen voxels of all scenes; ``per_scene`` the mean of each. Each
    scene is one batch of the inference service (:meth:`ditr.inference.Predictor.batch`, drawn with
    seed 0). Written to ``out`` (JSON) when given. ``overrides`` (``key=value``) adjust the student's
    stored run config first (a published student has no feature cache: ``vfm.cache=DIR`` or
    ``vfm.online=true``).
    """
    file = checkpoint if isinstance(checkpoint, ModelFile) else read_model_file(checkpoint)
    predictors, teacher = load_student(file, device, overrides, need_root=scenes is None)
    config = predictors[0].config
    if scenes is not None:
        work = [(predictors[0], [Path(s) for s in scenes])]
    else:
        work = [(p, config_scenes(p.config, "val")) for p in predictors
                if p.config.dataset.splits.get("val") is not None]
        if not work:
            raise DitrError("no scenes given and the run config has no validation split")
    total, weighted, per_scene = 0, 0.0, {}
    for predictor, paths in work:
        for path in paths:
            batch = predictor.batch(path)
            pred = predictor.model(batch)["pred"]
            target = teacher_features(batch, teacher, pred.device)
            _, cos, count = cosine_distill_loss(pred, target, batch["img_seen"])
            per_scene[batch["name"][0]] = {"cosine": float(cos), "seen_voxels": count,
                                           "voxels": int(batch["img_seen"].numel())}
            total += count
            weighted += float(cos) * count if count else 0.0
    result = {"checkpoint": str(checkpoint), "step": file.record.get("step"),
              "teacher": config.vfm.model, "cosine": weighted / total if total else float("nan"),
              "seen_voxels": total, "scenes": len(per_scene), "per_scene": per_scene}
    if out is not None:
        from .fileio import atomic_write_json

        atomic_write_json(Path(out), result)
    return result
