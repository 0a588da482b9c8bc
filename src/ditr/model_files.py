"""Every file a trained model comes in, read in one place; the ``.ditr`` bundle written here too.

A trained model reaches ditr in one of three formats, told apart by their content, not their name:

- a **training state** (``last.pt`` / ``best.pt`` of ``ditr train`` / ``ditr distill``, written by
  :mod:`ditr.engine.checkpoint`): weights, the run config, and the optimizer / scheduler / RNG
  states that resuming needs;
- a **.ditr bundle** (``ditr export``): the one format for deploying weights, see below;
- a **reference-format state dict** (a Pointcept ``model_best.pth``): weights only, no run config,
  so it can initialise a model (:func:`load_init`, ``ditr train --init``) but not rebuild one.

:func:`read_model_file` reads any of them into a :class:`ModelFile` (weights, run config, format,
training record); :func:`load_model` rebuilds the model from the stored run config
(:func:`ditr.build.model_from_config`) and copies the weights in, for ``ditr evaluate``,
``ditr predict``, ``ditr distill --evaluate`` and the demo alike; :func:`checkpoint_requirements`
says what a model needs at inference; ``ditr info`` reads files through here as well.

Why a bundle and not TorchScript or ONNX: the PTv3 forward builds its sparse-conv rulebooks, serialization
orders and pooling clusters from the point cloud itself, with data-dependent shapes (``unique``,
``nonzero``, ``repeat_interleave``) and Python integers read from tensors (the serialization depth,
per-offset pair counts). ``torch.jit.trace`` fails on the custom sparse-conv function and would in
any case freeze those integers (a graph that is wrong for every other cloud); ``torch.jit.script``
rejects the Python constructs; ``torch.export`` (and the ONNX exporter built on it) stops at the
first data-dependent size (``docs/predict.md`` lists the errors; ``tests/test_info_export.py``
checks they still occur, so the documentation is updated when that changes).

What a bundle is: a safetensors file (``model.*`` weights, read without pickle by any safetensors
reader in any language) whose header metadata holds the run configuration as JSON: classes,
input features, voxel size, views, VFM and projection settings, everything ``ditr predict``
needs. It leaves out the optimizer, scheduler and RNG states of a training checkpoint (with AdamW
a bundle is about a third of the checkpoint), and loading it runs no training code and unpickles
nothing: the model is rebuilt from the configuration and the weights are copied in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .build import head_channels, model_from_config
from .configs import ModelKind, RunConfig
from .engine.checkpoint import FORMAT as TRAINING_STATE
from .engine.checkpoint import TrainingStateError, load_training_state
from .errors import DitrError
from .models.reference import convert_reference_state_dict, extract_state_dict

BUNDLE = "ditr.bundle"
REFERENCE = "reference"
#: Bundle format version this ditr writes (and the newest it reads).
VERSION = 1
SUFFIX = ".ditr"
#: The training record kept from a training state (what ``ditr info`` shows and a bundle carries).
RECORD_KEYS = ("step", "epoch", "total_steps", "world_size", "best", "metrics")


@dataclass
class ModelFile:
    """What a model file holds: ``format`` is ``ditr.train_state``, ``ditr.bundle`` or ``reference``."""

    path: Path
    format: str
    weights: dict[str, Tensor]
    #: The run config the model was trained with; None for a reference-format state dict.
    config: dict[str, Any] | None
    #: Step, epoch, best and last metrics ... of training; empty for a reference-format state dict.
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The format in words (``ditr info``)."""
        return {TRAINING_STATE: "training checkpoint", BUNDLE: "bundle"}.get(self.format, "reference state dict")

    def run_config(self) -> RunConfig:
        """The stored run config, typed; an error for a file that has none (nothing to rebuild from)."""
        if self.format == REFERENCE:
            raise DitrError(f"{self.path}: a reference-format state dict holds weights but no run configuration; "
                            "use it to initialise a model (ditr train ... --init)")
        if not self.config:
            raise DitrError(f"{self.path}: no run configuration stored; was it written by ditr train?")
        return RunConfig.from_stored(self.config, f"{self.path} (stored run config)")


def read_model_file(path: str | Path) -> ModelFile:
    """Read a training state, a ``.ditr`` bundle or a reference-format state dict, whichever ``path`` is.

    A training state that cannot be read (damaged, or from a newer ditr) is an error, never
    mistaken for a reference file.
    """
    path = Path(path)
    if not path.is_file():
        raise DitrError(f"{path}: no such model file")
    if is_bundle(path):
        weights, config, record = read_bundle(path)
        return ModelFile(path, BUNDLE, weights, config, record)
    try:
        state = load_training_state(path)
    except TrainingStateError as exc:
        not_a_state = exc
    else:
        return ModelFile(path, TRAINING_STATE, state["model"], state.get("config") or None,
                         {k: state.get(k) for k in RECORD_KEYS})
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or one that needs unpickling code
        raise DitrError(f"{path}: not a model file (neither a ditr training state, a .ditr bundle nor a "
                        f"reference state dict: {type(exc).__name__}: {exc})") from None
    if isinstance(raw, Mapping) and "format" in raw:  # a ditr file that load_training_state refused
        raise not_a_state
    try:
        weights = extract_state_dict(raw)
    except DitrError as exc:
        raise DitrError(f"{path}: not a model file ({exc})") from None
    if not weights or not all(isinstance(v, Tensor) for v in weights.values()):
        raise DitrError(f"{path}: not a model file (a torch file, but not a state dict of tensors)")
    return ModelFile(path, REFERENCE, weights, None, {})


def load_model(source: str | Path | ModelFile, device: str | torch.device = "cpu",
               prepare: Callable[[RunConfig], RunConfig] | None = None) -> tuple[nn.Module, RunConfig]:
    """The trained model of a training state or bundle, in eval mode, and the run config it was trained with.

    ``source`` is a path or a :class:`ModelFile` already read. ``prepare(config)`` may adjust the
    config before the model is built (``ditr predict`` sets ``vfm.online`` there, so that the
    model gets its VFM attached). The model is whatever ``model.name`` says; a caller that needs a
    particular kind (the distillation student) checks the config.
    """
    file = source if isinstance(source, ModelFile) else read_model_file(source)
    config = file.run_config()
    if prepare is not None:
        config = prepare(config)
    model = model_from_config(config)
    model.load_state_dict(file.weights)
    return model.to(device).eval(), config


def load_init(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Initialise ``model`` from a checkpoint's matching weights (same name and shape); a report.

    Heads of another shape (other classes) are skipped and reported; backbone tensors of another
    shape (another backbone) are an error rather than a silently partial initialisation.

    Accepts any model file of :func:`read_model_file`: a ditr training state (``ditr train`` /
    ``ditr distill``: the student's ``backbone.*`` loads, ``distill_head.*`` is dropped, a new
    ``seg_head`` stays as initialised), a ``.ditr`` bundle, or a reference-format file
    (``{"state_dict": ...}`` with ``module.`` / ``backbone.`` / ``seg_head.`` keys, mapped by
    :func:`ditr.models.reference.convert_reference_state_dict`). The report's ``format`` says which.
    """
    file = read_model_file(path)
    state = file.weights
    if file.format == REFERENCE:
        state, _ = convert_reference_state_dict(state, model)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    skipped = sorted(k for k in state if k not in usable)
    clash = [k for k in skipped if k in own and k.startswith("backbone.")]
    if clash or not usable:
        raise DitrError(f"{path}: its backbone does not fit this model ({len(clash)} tensors of another shape, "
                        f"e.g. {clash[:3]}); was it trained with the same model.backbone / input features?")
    model.load_state_dict(usable, strict=False)
    return {"path": str(path), "format": file.format, "loaded": len(usable),
            "new": sorted(k for k in own if k not in usable), "skipped": skipped,
            "mismatched": sorted(k for k in skipped if k in own)}


def checkpoint_requirements(path: str | Path) -> dict[str, Any]:
    """What a model (training state or bundle) needs: images or not, teacher, classes, inputs."""
    file = read_model_file(path)
    config = file.run_config()
    kind, data = config.kind, config.dataset
    return {
        "checkpoint": str(path), "format": file.format, "model": kind.value,
        "task": "segmentation" if kind.segments else "distillation",
        "needs_images": kind.needs_images_at_inference,
        "needs_images_for_training": kind.uses_images,
        "vfm": config.vfm.model if kind.uses_images else None,
        "feature_dim": None if not kind.uses_images else (head_channels(config) if kind is ModelKind.D_DITR
                                                          else config.model.image_channels),
        "backbone": config.model.backbone,
        "input_features": list(data.input_features), "in_channels": data.in_channels,
        "num_classes": data.num_classes if kind.segments else None,
        "classes": data.class_names if kind.segments else None,
        "step": file.record.get("step"), "total_steps": file.record.get("total_steps"),
        "init": config.init,
    }


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a ``.ditr`` bundle (by its header, whatever its name)."""
    try:
        return _metadata(path).get("format") == BUNDLE
    except Exception:  # not a safetensors file at all: a training checkpoint, or something else
        return False


def _metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def read_bundle(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(weights, run config, training record) of a bundle; a clear error for anything else."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise DitrError(f"{path}: no such bundle")
    try:
        meta = _metadata(path)
    except Exception as exc:
        raise DitrError(f"{path}: not a ditr bundle (unreadable safetensors header: {exc})") from None
    if meta.get("format") != BUNDLE:
        raise DitrError(f"{path}: a safetensors file, but not a ditr bundle (metadata format "
                        f"{meta.get('format')!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise DitrError(f"{path}: bundle version {meta['version']} is newer than this ditr ({VERSION})")
    return load_file(str(path)), json.loads(meta["config"]), json.loads(meta.get("training", "{}"))


def export_bundle(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the model of a ``ditr train`` / ``ditr distill`` checkpoint as a ``.ditr`` bundle; a report."""
    from safetensors.torch import save

    from .engine.logging import to_jsonable
    from .fileio import atomic_write_bytes

    file = read_model_file(checkpoint)
    config = file.run_config()
    weights = {k: v.detach().cpu().contiguous() for k, v in file.weights.items()}
    record = {**{k: file.record.get(k) for k in ("step", "epoch", "total_steps", "best", "metrics")},
              "source": str(checkpoint)}
    metadata = {"format": BUNDLE, "version": str(VERSION), "config": json.dumps(to_jsonable(config.to_dict())),
                "training": json.dumps(to_jsonable(record))}
    path = atomic_write_bytes(out, save(weights, metadata=metadata))
    return {"bundle": str(path), "format": "bundle", "tensors": len(weights),
            "float_values": sum(v.numel() for v in weights.values() if v.is_floating_point()),  # + BN stats
            "bytes": path.stat().st_size, "checkpoint_bytes": Path(checkpoint).stat().st_size}
