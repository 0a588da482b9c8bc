"""Every file a trained model comes in, read in one place; the ``.ditr`` bundle written here too.

A trained model reaches ditr in one of three formats, told apart by their content, not their name:

- a **training state** (``last.pt`` / ``best.pt`` of ``ditr train`` / ``ditr distill``, written by
  :mod:`ditr.engine.checkpoint`): weights, the run config, and the optimizer / scheduler / RNG
  states that resuming needs;
- a **.ditr bundle** (``ditr export``): the one format for deploying weights, see below;
- a **reference-format state dict** (a Pointcept / DITR-release ``model_best.pth``, a trainer
  checkpoint or a bare state dict): weights only; its run config is derived from the weights, the
  reference ``config.py`` beside it (read, never executed) and its zoo entry, cross-checked
  (:mod:`ditr.published`). Where they cannot tell what the model needs (its origin, its VFM), it
  can still initialise a model (:func:`load_init`) but not be rebuilt until ``--origin`` /
  ``--vfm`` say.

What a command names as its model (:func:`read_model_file`) is any of those files, a published
model's short name (:mod:`ditr.zoo`: looked up in the Hugging Face cache, fetched with
``--download``), a published experiment folder (``config.py`` + ``model/model_best.pth`` or
``model_last.pth``) or a ``ditr train`` run directory (``best.pt`` / ``last.pt``).

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
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import zoo
from .build import head_channels, model_from_config
from .configs import ModelKind, RunConfig
from .engine.checkpoint import FORMAT as TRAINING_STATE
from .engine.checkpoint import check_training_state
from .errors import DitrError
from .fileio import read_torch_file, torch_load_problem
from .integrity import HASH_KEY, IntegrityError, mismatch, tensor_digest, warn_no_hash
from .published import DEPTH_FORMULA, LoadOptions, PublishedInfo, describe, find_config, find_weights
from .stored_paths import TrainingPlace, strip_paths

BUNDLE = "ditr.bundle"
REFERENCE = "reference"
#: Bundle format version this ditr writes (and the newest it reads).
VERSION = 1
SUFFIX = ".ditr"
#: The training record kept from a training state (what ``ditr info`` shows and a bundle carries).
RECORD_KEYS = ("step", "epoch", "total_steps", "world_size", "best", "metrics")
#: ``model.ptv3`` settings that say how a model computes (not its size): carried from an
#: ``--init`` model into the fine-tune unless the run sets them itself.
BEHAVIOUR_KEYS = ("reference_compat", "depth_formula", "compat_pooling_shuffle")
#: A ditr run directory's checkpoints, in order of preference.
RUN_FILES = ("best.pt", "last.pt")

__all__ = ["BUNDLE", "REFERENCE", "TRAINING_STATE", "LoadOptions", "ModelFile", "checkpoint_requirements",
           "export_bundle", "init_model", "is_bundle", "load_init", "load_model", "read_bundle", "read_model_file"]


@dataclass
class ModelFile:
    """What a model file holds: ``format`` is ``ditr.train_state``, ``ditr.bundle`` or ``reference``.

    ``weights`` are in ditr's naming whatever the format (reference keys are mapped on reading);
    ``published`` says where a reference model came from and how its settings were decided.
    """

    path: Path
    format: str
    weights: dict[str, Tensor]
    #: The run config the model was trained with (derived for a reference model; None where it cannot be).
    config: dict[str, Any] | None
    #: Step, epoch, best and last metrics ... of training (epoch and best metric of a reference trainer);
    #: a training state's ``paths``: the folder training ran in and the run directory.
    record: dict[str, Any] = field(default_factory=dict)
    #: What the user named (a path, a zoo name, a folder).
    source: str = ""
    published: PublishedInfo | None = None
    options: LoadOptions = field(default_factory=LoadOptions)

    def __str__(self) -> str:
        return self.source or str(self.path)

    @property
    def kind(self) -> str:
        """The format in words (``ditr info``)."""
        if self.format == REFERENCE:
            if self.published is not None and self.published.zoo:
                return f"published model {self.published.zoo} (reference trainer checkpoint)"
            if self.published is not None and self.published.config_py:
                return "published reference model (config.py + trainer checkpoint)"
            return "reference state dict"
        return {TRAINING_STATE: "training checkpoint", BUNDLE: "bundle"}.get(self.format, self.format)

    @property
    def place(self) -> TrainingPlace:
        """Where the model was trained, to find the paths its run config recorded (:mod:`ditr.stored_paths`)."""
        return TrainingPlace.of(self.path, self.record)

    @property
    def origin(self) -> str | None:
        """``ditr`` / ``pointcept`` for a reference model whose origin is known, else None."""
        return self.published.origin if self.published is not None else None

    def require(self, *what: str) -> None:
        """An error (one line asking for ``--origin`` / ``--vfm`` ...) unless ``what`` was decided."""
        if self.published is not None:
            for key in what:
                if key in self.published.unresolved:
                    raise DitrError(self.published.unresolved[key])

    def run_config(self) -> RunConfig:
        """The stored (or derived) run config, typed, with the options applied; an error for a file
        that has none (nothing to rebuild the model from)."""
        if self.format == REFERENCE:
            self.require("model", "origin", "vfm", "backbone")
        if not self.config:
            raise DitrError(f"{self}: no run configuration stored; was it written by ditr train?")
        config = RunConfig.from_stored(self.config, f"{self} (stored run config)")
        if self.options.deterministic:
            config.model.ptv3.update(shuffle_orders=False, compat_pooling_shuffle=False)
        # downloads only when this command was asked (--download): a stored vfm.download=true (a bundle
        # or checkpoint from someone else) never makes a command fetch weights nobody asked for
        config.vfm.download = bool(self.options.download)
        return config


def read_model_file(source: str | Path | ModelFile, options: LoadOptions | None = None) -> ModelFile:
    """Read whatever ``source`` names: a training state, a ``.ditr`` bundle, a reference ``.pth``
    (with the ``config.py`` beside it or one level up), a published folder, a ``ditr train`` run
    directory, or a published model's short name (:mod:`ditr.zoo`).

    A training state that cannot be read (damaged, or from a newer ditr) is an error, never
    mistaken for a reference file. A ModelFile is returned as it is.
    """
    if isinstance(source, ModelFile):
        return source
    options = options or LoadOptions()
    text = str(source)
    path = Path(source).expanduser()
    if not path.exists():
        if "/" not in text and not path.suffix and text not in (".", ".."):
            entry = zoo.get_entry(text)
            folder = zoo.resolve_entry(entry, allow_download=options.download, cache_dir=options.hub_cache)
            return _read_folder(folder, text, options, entry)
        raise DitrError(f"{path}: no such model file")
    if path.is_dir():
        for name in RUN_FILES:
            if (path / name).is_file():
                return read_model_file(path / name, options)
        return _read_folder(path, text, options, zoo.entry_for_path(path))
    return _read_file(path, text, options)


def _read_folder(folder: Path, source: str, options: LoadOptions, entry: zoo.ZooEntry | None) -> ModelFile:
    weights = find_weights(folder)
    return _read_file(weights, source, options, config_py=find_config(weights, folder), entry=entry)


def _read_file(path: Path, source: str, options: LoadOptions, *, config_py: Path | None = None,
               entry: zoo.ZooEntry | None = None) -> ModelFile:
    if is_bundle(path):
        tensors, stored, training = read_bundle(path)
        return ModelFile(path, BUNDLE, tensors, stored, training, source, options=options)
    try:
        raw = read_torch_file(path)  # zip CRCs checked
    except DitrError:
        raise
    except Exception as exc:  # not a torch file, or one that needs unpickling code
        raise DitrError(f"{path}: not a model file (neither a ditr training state, a .ditr bundle nor a "
                        f"reference state dict: {torch_load_problem(exc)})") from None
    if isinstance(raw, Mapping) and "format" in raw:  # ours, or a ditr file this version refuses
        state = check_training_state(raw, path, keys=("model",), zip_checked=zipfile.is_zipfile(path))
        record = {k: state.get(k) for k in RECORD_KEYS}
        record["paths"] = state.get("paths") or {"work_dir": (state.get("trainer") or {}).get("work_dir")}
        return ModelFile(path, TRAINING_STATE, state["model"], state.get("config") or None, record, source,
                         options=options)
    warn_no_hash(path, zipfile.is_zipfile(path))  # a reference file: no content hash, never refused for that
    if config_py is None:
        config_py = find_config(path)
    entry = entry or zoo.entry_for_path(path)
    weights, config, record, info = describe(raw, path, source, options, config_py=config_py, entry=entry)
    return ModelFile(path, REFERENCE, weights, config.to_dict() if config is not None else None, record, source,
                     info, options)


def _load_weights(model: nn.Module, file: ModelFile) -> None:
    """Copy a file's weights into the model built from its config: every tensor must fit (absent
    BatchNorm ``num_batches_tracked`` counters are filled in, as torch does)."""
    if file.format != REFERENCE:
        model.load_state_dict(file.weights)
        return
    own = model.state_dict()
    missing = [k for k in own if k not in file.weights and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in file.weights if k not in own]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in file.weights.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(f"{n} {label} (e.g. {', '.join(items[:3])})" for label, items, n in (
            ("missing", missing, len(missing)), ("unexpected", unexpected, len(unexpected)),
            ("of another shape", wrong, len(wrong))) if items)
        raise DitrError(f"{file}: its weights do not fit the model its config describes: {detail}")
    model.load_state_dict({k: v for k, v in file.weights.items()}, strict=False)


def _vfm_line(config: RunConfig, file: ModelFile) -> str:
    """One line naming the VFM weights a DITR model needs and how to get them."""
    from .vfm.loading import MODELS_ENV
    from .vfm.registry import get_spec

    spec = get_spec(config.vfm.model)
    hub = f" ({spec.hub_id} into the Hugging Face cache)" if spec.hub_id else ""
    gated = "; DINOv3 is gated: accept its licence on huggingface.co and hf auth login first" \
        if spec.family == "dinov3" else ""
    return (f"{file}: a DITR model that reads {spec.name} features, whose weights are not found offline: add "
            f"--download{hub}, or --set vfm.checkpoint=PATH (a Hugging Face folder or Meta's .pth), or put them at "
            f"${MODELS_ENV}/{spec.name}/{gated}")


def load_model(source: str | Path | ModelFile, device: str | torch.device = "cpu",
               prepare: Callable[[RunConfig], RunConfig] | None = None,
               options: LoadOptions | None = None) -> tuple[nn.Module, RunConfig]:
    """The trained model of any model file (:func:`read_model_file`), in eval mode, and its run config.

    ``source`` is what :func:`read_model_file` takes, or a :class:`ModelFile` already read.
    ``prepare(config)`` may adjust the config before the model is built (``ditr predict`` sets
    ``vfm.online`` there, so that the model gets its VFM attached). ``options`` (``--origin``,
    ``--vfm``, ``--download``, ``--deterministic``) apply to reading a path or name. The model is
    whatever ``model.name`` says; a caller that needs a particular kind (the distillation
    student) checks the config. A published model is built with the reference's behaviour
    (``model.ptv3.reference_compat``) unless ``deterministic``.
    """
    from .vfm.loading import WeightsNotFound

    file = read_model_file(source, options)
    config = file.run_config()
    if prepare is not None:
        config = prepare(config)
    try:
        model = model_from_config(config)
    except WeightsNotFound:
        raise DitrError(_vfm_line(config, file)) from None
    _load_weights(model, file)
    return model.to(device).eval(), config


def init_behaviour(config: RunConfig, file: ModelFile) -> RunConfig:
    """``config`` with how the ``--init`` model computes carried over (:data:`BEHAVIOUR_KEYS` of
    ``model.ptv3``: a published model's reference behaviour and its origin's depth rule), unless
    the run sets them itself. A reference model of unknown origin is an error asking for ``--origin``."""
    if file.format == REFERENCE:
        file.require("origin")
        origin = file.origin
        behaviour: dict[str, Any] = {"reference_compat": True,
                                     "depth_formula": DEPTH_FORMULA[origin] if origin else "pointcept"}
    elif file.config:
        stored = RunConfig.from_stored(file.config, f"{file} (stored run config)").model.ptv3
        behaviour = {k: stored[k] for k in BEHAVIOUR_KEYS if k in stored}
    else:
        behaviour = {}
    out = config.copy()
    for key, value in behaviour.items():
        out.model.ptv3.setdefault(key, value)
    return out


def init_model(config: RunConfig, source: str | Path | ModelFile,
               options: LoadOptions | None = None) -> tuple[nn.Module, RunConfig, dict[str, Any]]:
    """The model a fine-tune starts from (``ditr train --init``): built from ``config`` with the
    init model's behaviour carried over (:func:`init_behaviour`), its matching weights loaded
    (:func:`load_init`); returns (model, config with ``init`` recorded, report)."""
    file = read_model_file(source, options)
    config = init_behaviour(config, file)
    model = model_from_config(config)
    report = load_init(model, file)
    config.init = {k: report[k] for k in ("path", "format", "loaded")} | {"skipped": len(report["skipped"])}
    if file.published is not None:
        config.init |= {"source": file.source, "origin": file.origin, "zoo": file.published.zoo}
    return model, config, report


def load_init(model: nn.Module, path: str | Path | ModelFile, options: LoadOptions | None = None) -> dict[str, Any]:
    """Initialise ``model`` from a checkpoint's matching weights (same name and shape); a report.

    Heads of another shape (other classes) are skipped and reported; backbone tensors of another
    shape (another backbone) are an error rather than a silently partial initialisation. When
    something is skipped or left new, one warning line gives the counts (the report lists them).

    Accepts anything :func:`read_model_file` reads: a ditr training state (``ditr train`` /
    ``ditr distill``: the student's ``backbone.*`` loads, ``distill_head.*`` is dropped, a new
    ``seg_head`` stays as initialised), a ``.ditr`` bundle, a published model (zoo name, folder) or
    a reference-format file (``{"state_dict": ...}`` with ``module.`` / ``backbone.`` / ``seg_head.``
    keys, mapped by :func:`ditr.published.reference_weights`). The report's ``format`` says which.
    """
    file = read_model_file(path, options)
    state = file.weights
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    skipped = sorted(k for k in state if k not in usable)
    clash = [k for k in skipped if k in own and k.startswith("backbone.")]
    if clash or not usable:
        raise DitrError(f"{file}: its backbone does not fit this model ({len(clash)} tensors of another shape, "
                        f"e.g. {clash[:3]}); was it trained with the same model.backbone / input features?")
    model.load_state_dict(usable, strict=False)
    new = sorted(k for k in own if k not in usable and not k.endswith(".num_batches_tracked"))
    report = {"path": str(file.path), "format": file.format, "loaded": len(usable), "new": new, "skipped": skipped,
              "mismatched": sorted(k for k in skipped if k in own),
              "defaulted": sorted(k for k in own if k not in usable and k.endswith(".num_batches_tracked"))}
    if new or skipped:
        heads = sorted({k.split(".")[0] for k in new + skipped if not k.startswith("backbone.")})
        warnings.warn(f"{file}: initialised {len(usable)} of {len(own)} tensors; {len(new)} left new, "
                      f"{len(skipped)} of the file's skipped ({', '.join(heads) or 'backbone'}); "
                      "the returned report lists them", stacklevel=2)
    return report


def checkpoint_requirements(path: str | Path | ModelFile, options: LoadOptions | None = None) -> dict[str, Any]:
    """What a model needs: images or not, teacher, classes, inputs (any model file or published model)."""
    file = read_model_file(path, options)
    config = file.run_config()
    kind, data = config.kind, config.dataset
    return {
        "checkpoint": str(file), "format": file.format, "model": kind.value,
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
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # a header that parses but does not describe the data
        raise IntegrityError(f"{path}: damaged bundle ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                             ) from None
    stored = meta.pop(HASH_KEY, None)
    if stored is None:
        warn_no_hash(path, None)
    elif tensor_digest(tensors, extra=meta) != stored:
        raise mismatch(path, "its weights and metadata")
    try:
        return tensors, json.loads(meta["config"]), json.loads(meta.get("training", "{}"))
    except (KeyError, ValueError) as exc:
        raise DitrError(f"{path}: damaged bundle (its metadata cannot be read: {exc})") from None


def export_bundle(checkpoint: str | Path | ModelFile, out: str | Path,
                  options: LoadOptions | None = None) -> dict[str, Any]:
    """Write a model (a ``ditr train`` / ``ditr distill`` checkpoint, a published model) as a
    ``.ditr`` bundle; a report. A published model's bundle holds its derived run config.

    A bundle carries no path of the machine it was made on (:func:`ditr.stored_paths.strip_paths`:
    no feature cache, dataset root, VFM weights file or source file): it is made to travel, and a
    command reading it is given those on its own command line."""
    from safetensors.torch import save

    from .engine.logging import to_jsonable
    from .fileio import atomic_write_bytes

    file = read_model_file(checkpoint, options)
    config = file.run_config()
    weights = {k: v.detach().cpu().contiguous() for k, v in file.weights.items()}
    record = {k: file.record.get(k) for k in ("step", "epoch", "total_steps", "best", "metrics")}
    stored = strip_paths(to_jsonable(config.to_dict()))
    metadata = {"format": BUNDLE, "version": str(VERSION), "config": json.dumps(stored),
                "training": json.dumps(to_jsonable(record))}
    metadata[HASH_KEY] = tensor_digest(weights, extra=metadata)
    path = atomic_write_bytes(out, save(weights, metadata=metadata))
    return {"bundle": str(path), "format": "bundle", "tensors": len(weights),
            "float_values": sum(v.numel() for v in weights.values() if v.is_floating_point()),  # + BN stats
            "bytes": path.stat().st_size, "checkpoint_bytes": file.path.stat().st_size}
