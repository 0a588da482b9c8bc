"""From a run configuration to a trained, evaluated model: the glue between data, model and engine.

``train`` builds the datasets of the config (``dataset.root`` + splits, or explicit scene lists),
the model (:func:`ditr.models.ditr.build_model`), the loss, optimizer and schedule, and runs the
:class:`~ditr.engine.trainer.Trainer` (resuming from its work directory). ``load_model`` rebuilds a
trained model from a checkpoint alone (the run config is stored in it), which is what
``ditr evaluate`` and ``ditr predict`` need.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from .data import SceneDataset, collate, input_channels
from .engine.checkpoint import load_checkpoint
from .engine.evaluator import EvalResult, Evaluator
from .engine.losses import SegmentationCriterion
from .engine.optim import OptimConfig
from .engine.trainer import Trainer, TrainerConfig
from .errors import DitrError
from .models.ditr import build_model
from .models.ptv3 import PTv3Segmentor

Scenes = Sequence[str | Path]


def needs_images(config: Mapping[str, Any]) -> bool:
    """Whether a model trained with this config reads images (DITR) or not (PTv3, D-DITR)."""
    return config.get("model", {}).get("name", "ditr") == "ditr"


def _vfm_backend(config: Mapping[str, Any]) -> Any:
    """The frozen VFM (an online image-feature source) for runs whose features are computed online
    (``vfm.online``)."""
    vfm = config.get("vfm", {})
    if not (needs_images(config) and vfm.get("online")):
        return None
    from .image_features import ImageFeatureSource

    # The model's own device: vfm.device is where the data workers prepare images (the CPU).
    return ImageFeatureSource(vfm, (config.get("images") or {}).get("resolution"), device="auto",
                              preprocess_device=vfm.get("device", "cpu"))


def model_from_config(config: Mapping[str, Any]) -> PTv3Segmentor:
    data = config.get("dataset", {})
    num_classes = data.get("num_classes")
    if not num_classes:
        raise DitrError("dataset.num_classes is not set")
    channels = input_channels(data.get("input_features", ["color", "normal"]))
    return build_model(config, channels, int(num_classes), vfm=_vfm_backend(config))


def datasets_from_config(config: Mapping[str, Any], train_scenes: Scenes | None = None,
                         val_scenes: Scenes | None = None) -> tuple[SceneDataset, SceneDataset | None]:
    """Train and validation datasets: explicit scene lists, else ``dataset.root`` with its splits."""
    if train_scenes is not None:
        train = SceneDataset(list(train_scenes), None, config, "train")
        val = SceneDataset(list(val_scenes), None, config, "val") if val_scenes else None
        return train, val
    train = SceneDataset.from_config(config, "train")
    splits = config.get("dataset", {}).get("splits") or {}
    val = SceneDataset.from_config(config, "val") if splits.get("val") is not None else None
    return train, val


def trainer_config(config: Mapping[str, Any], work_dir: str | Path, quiet: bool) -> TrainerConfig:
    known = {f.name for f in fields(TrainerConfig)}
    values = {k: v for k, v in dict(config.get("trainer", {})).items() if k in known}
    data = config.get("dataset", {})
    values.update(work_dir=str(work_dir), num_classes=data.get("num_classes"),
                  class_names=data.get("class_names"), ignore_index=data.get("ignore_index", -1))
    if quiet:
        values["quiet"] = True
    return TrainerConfig(**values)


def train(config: Mapping[str, Any], work_dir: str | Path, *, train_scenes: Scenes | None = None,
          val_scenes: Scenes | None = None, init: str | Path | None = None, resume: bool = True,
          quiet: bool = False, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train the model of ``config`` in ``work_dir`` (resuming there); returns the Trainer summary.

    ``init`` loads backbone weights from a checkpoint first (e.g. a distilled student); keys that
    do not fit (another head) are left at their initialisation.
    """
    config = copy.deepcopy(dict(config))
    torch.manual_seed(int(config.get("trainer", {}).get("seed", 0)))  # the same initial weights every run
    model = model_from_config(config)
    if init is not None:  # ditr train/distill state, ditr.ptv3 directory or reference format
        from .distill import load_init

        report = load_init(model, init)
        config["init"] = {k: report[k] for k in ("path", "format", "loaded")} | {"skipped": len(report["skipped"])}
    train_set, val_set = datasets_from_config(config, train_scenes, val_scenes)
    criterion = SegmentationCriterion(**config.get("loss", {}), ignore_index=config.get("dataset", {}).get("ignore_index", -1))
    trainer = Trainer(model, criterion, train_set, trainer_config(config, work_dir, quiet),
                      collate_fn=collate, val_set=val_set, val_collate_fn=collate,
                      optim=OptimConfig.from_dict(config.get("optim", {})), callbacks=callbacks, run_config=config)
    return fit(trainer, resume)


def fit(trainer: Trainer, resume: bool) -> dict[str, Any]:
    """Run a trainer to the end and release its DDP wrapper whatever happens (engine contract)."""
    try:
        return trainer.fit(resume=resume)
    finally:
        trainer.close()


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu",
               prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None
               ) -> tuple[PTv3Segmentor, dict[str, Any]]:
    """The trained model of a checkpoint and the run config it was trained with.

    ``prepare(config)`` may adjust the config before the model is built (``ditr predict`` sets
    ``vfm.online`` there, so that the model gets its VFM attached).
    """
    state = load_checkpoint(checkpoint)
    config = state.get("config") or {}
    if not config:
        raise DitrError(f"{checkpoint}: no run configuration stored; was it written by ditr train?")
    if not needs_images(config):  # the image-free path never loads features
        config.setdefault("images", {})["enabled"] = False
    if prepare is not None:
        config = prepare(config)
    model = model_from_config(config)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config


def evaluate(checkpoint: str | Path, scenes: Scenes, *, tta: bool = False, batch_size: int = 1,
             device: str | torch.device = "cpu", overrides: Mapping[str, Any] | None = None) -> EvalResult:
    """mIoU and friends of a trained model on scene directories, scored on every original point.

    Without ``tta`` one voxelisation is scored through the voxel inverse map; with it, the test
    pipeline's fragments (every point of every voxel) and ``test_time.variants`` (rotations,
    scales, flips) all vote with their softmax probabilities (DESIGN 1.5).
    """
    model, config = load_model(checkpoint, device)
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    data = config.get("dataset", {})
    evaluator = Evaluator(model, int(data["num_classes"]), ignore_index=data.get("ignore_index", -1),
                          class_names=data.get("class_names"), batch_size=batch_size, device=torch.device(device))
    if not tta:
        return evaluator.run(SceneDataset(list(scenes), None, config, "val"), collate)
    num_classes = int(data["num_classes"])

    def vote(item: Mapping[str, Any]) -> dict[str, Any]:
        from .engine.evaluator import as_output
        from .engine.loading import move_to
        from .engine.metrics import LogitVoter

        target = item["origin_segment"]
        voter = LogitVoter(target.shape[0], num_classes, evaluator.device)
        for fragment in item["fragments"]:
            batch = move_to(collate([fragment]), evaluator.device)
            voter.add(as_output(model(batch))["logits"], batch["index"])
        return {"pred": voter.prediction(), "target": target}

    return evaluator.run(SceneDataset(list(scenes), None, config, "test"), lambda items: items[0], vote)


@torch.no_grad()
def predict_scene(model: PTv3Segmentor, config: Mapping[str, Any], scene_dir: str | Path,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """(N,) predicted class of every original point of a scene (one voxelisation, no voting)."""
    import numpy as np

    from .engine.evaluator import as_output
    from .engine.loading import move_to

    dataset = SceneDataset([scene_dir], None, config, "val")
    batch = move_to(collate([dataset.get(0, np.random.default_rng(0))]), torch.device(device))
    logits = as_output(model.eval()(batch))["logits"]
    return logits.argmax(1)[batch["inverse"]].cpu()
