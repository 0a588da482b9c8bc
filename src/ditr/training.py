"""From a run configuration to a trained, evaluated model: the glue between data, model and engine.

``train`` builds the datasets of the config (``dataset.root`` + splits, or explicit scene lists),
the model (:func:`ditr.build.model_from_config`), the loss, optimizer and schedule, and runs the
:class:`~ditr.engine.trainer.Trainer` (resuming from its work directory). ``evaluate`` scores a
trained model rebuilt from its file alone (the run config is stored in it) with the inference
service's predictions (:class:`ditr.inference.Predictor`) on every original point.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from .build import model_from_config
from .configs import RunConfig
from .data import SceneDataset, collate, resolve_scenes
from .data.dataset import check_input_files
from .data.dataset import item_rng
from .engine.evaluator import EvalResult, Evaluator
from .engine.losses import SegmentationCriterion
from .engine.trainer import Trainer, TrainerConfig
from .model_files import ModelFile, init_model

Scenes = Sequence[str | Path]


def record_scene_folder(config: RunConfig, scenes: Scenes | None) -> None:
    """Store the folder of explicit scene lists as ``dataset.root``, so the checkpoint tells where its
    data came from: the preset's own root (``data/synthetic`` of the synthetic preset) was not read."""
    if scenes:
        parents = [os.path.abspath(Path(s).parent) for s in scenes]
        config.dataset.root = os.path.commonpath(parents)


def datasets_from_config(config: RunConfig, train_scenes: Scenes | None = None,
                         val_scenes: Scenes | None = None) -> tuple[SceneDataset, SceneDataset | None]:
    """Train and validation datasets: explicit scene lists, else ``dataset.root`` with its splits."""
    if train_scenes is not None:
        train = SceneDataset(list(train_scenes), None, config, "train")
        val = SceneDataset(list(val_scenes), None, config, "val") if val_scenes else None
        return train, val
    train = SceneDataset.from_config(config, "train")
    val = SceneDataset.from_config(config, "val") if config.dataset.splits.get("val") is not None else None
    return train, val


def trainer_config(config: RunConfig, work_dir: str | Path, quiet: bool) -> TrainerConfig:
    """The run's ``trainer`` section with what the workflow knows: work directory, classes, quiet."""
    data = config.dataset
    return dataclasses.replace(config.trainer, work_dir=str(work_dir), num_classes=data.num_classes,
                               class_names=data.class_names, ignore_index=data.ignore_index,
                               quiet=quiet or config.trainer.quiet)


def train(config: RunConfig | Mapping[str, Any], work_dir: str | Path, *, train_scenes: Scenes | None = None,
          val_scenes: Scenes | None = None, init: str | Path | ModelFile | None = None, resume: bool = True,
          quiet: bool = False, callbacks: Sequence[Any] = (), restart: bool = False) -> dict[str, Any]:
    """Train the model of ``config`` in ``work_dir`` (resuming there); returns the Trainer summary.

    ``init`` loads backbone weights from a checkpoint first (e.g. a distilled student, a published
    model: :func:`ditr.model_files.init_model`); keys that do not fit (another head) are left at
    their initialisation, and the init model's behaviour (a published model's reference
    compatibility and depth rule) is carried into the run config unless it sets them itself.
    When ``work_dir`` holds checkpoints of which none is readable it is an error, unless ``restart``
    (start over from step 0; the damaged files are overwritten).
    """
    config = RunConfig.coerce(config).copy()
    torch.manual_seed(config.trainer.seed)  # the same initial weights every run
    if init is not None:  # any model file or published model; how it computes is carried over
        model, config, _ = init_model(config, init)
    else:
        model = model_from_config(config)
    train_set, val_set = datasets_from_config(config, train_scenes, val_scenes)
    record_scene_folder(config, train_scenes)
    for dataset in (train_set, val_set):  # inputs, label arrays and ids checked before any work, naming the file
        if dataset is not None:
            check_input_files(dataset.paths, dataset.input_features)
            dataset.check_labels()
    criterion = SegmentationCriterion(**dataclasses.asdict(config.loss), ignore_index=config.dataset.ignore_index)
    trainer = Trainer(model, criterion, train_set, trainer_config(config, work_dir, quiet),
                      collate_fn=collate, val_set=val_set, val_collate_fn=collate,
                      optim=config.optim, callbacks=callbacks, run_config=config.to_dict())
    return fit(trainer, resume, restart)


def fit(trainer: Trainer, resume: bool, restart: bool = False) -> dict[str, Any]:
    """Run a trainer to the end and release its DDP wrapper whatever happens (engine contract)."""
    try:
        return trainer.fit(resume=resume, restart=restart)
    finally:
        trainer.close()


def evaluate(checkpoint: str | Path | ModelFile, scenes: Scenes, *, tta: bool = False, batch_size: int = 1,
             device: str | torch.device = "cpu", overrides: Sequence[str] = ()) -> EvalResult:
    """mIoU and friends of a trained model on scene directories, scored on every original point.

    Every scene goes whole through the inference service (:class:`ditr.inference.Predictor`, one
    chunk). Without ``tta`` one voxelisation is scored through the voxel inverse map; with it, the
    test pipeline's fragments (every point of every voxel) and ``test_time.variants`` (rotations,
    scales, flips) all vote with their softmax probabilities (docs/design.md#test-time-augmentation).
    Scenes are shared over the ranks of a distributed run (each scene scored once, the confusion
    matrix summed) and drawn with fixed evaluation seeds (the trainer's validation draws with these
    when ``trainer.seed`` is 0); ``batch_size`` scenes are scored per step, each forwarded on its own.
    """
    from .inference import Predictor
    from .predict import PredictOptions

    predictor = Predictor.load(checkpoint, device, overrides=overrides)
    config = predictor.config
    data = config.dataset
    evaluator = Evaluator(predictor.model, config.num_classes(), ignore_index=data.ignore_index,
                          class_names=data.class_names, batch_size=batch_size, device=torch.device(device))
    # Whole scenes (no chunks) and no estimated normals: a scene without the model's inputs is an error.
    options = PredictOptions(max_points=None, tta=tta, estimate_normals=False)

    def step(items: list[tuple[Path, np.random.Generator]]) -> dict[str, Any]:
        labels, targets = [], []
        for path, rng in items:
            pred = predictor.predict(path, options, rng=rng)
            assert pred.segment is not None
            labels.append(pred.labels)
            targets.append(pred.segment)
        return {"pred": torch.from_numpy(np.concatenate(labels)), "target": torch.from_numpy(np.concatenate(targets))}

    return evaluator.run(_ScenesToScore(list(scenes)), list, step)


class _ScenesToScore(TorchDataset):
    """(scene directory, its generator) items: the evaluation seeds the engine gives every item."""

    def __init__(self, paths: Scenes):
        self.paths = resolve_scenes(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Path, np.random.Generator]:
        return self.paths[index], item_rng()
