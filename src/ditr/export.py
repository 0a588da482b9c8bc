"""Trained models as one portable file: the ``.ditr`` bundle (``ditr export``).

Why not TorchScript or ONNX: the PTv3 forward builds its sparse-conv rulebooks, serialization
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import DitrError

FORMAT = "ditr.bundle"
VERSION = 1
SUFFIX = ".ditr"

#: Why the other formats are refused (the command prints it; docs/predict.md has the details).
UNSUPPORTED = (
    "{fmt} export of the PTv3 / DITR forward does not work: the network builds its sparse-conv "
    "rulebooks, serialization orders and pooling clusters from the points with data-dependent shapes "
    "(unique, nonzero, .tolist()), which tracing freezes to the example cloud and torch.export / the "
    "ONNX exporter cannot capture. Use --format bundle (a safetensors file with the config, loadable "
    "by ditr predict and ditr.export.load_bundle); see docs/predict.md."
)


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a ``.ditr`` bundle (by its header, whatever its name)."""
    try:
        return _metadata(path).get("format") == FORMAT
    except Exception:  # not a safetensors file at all: a training checkpoint, or something else
        return False


def _metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def export_bundle(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the model of a ``ditr train`` checkpoint as a ``.ditr`` bundle; a report."""
    from safetensors.torch import save

    from .engine.checkpoint import load_training_state
    from .engine.logging import to_jsonable
    from .fileio import atomic_write_bytes

    state = load_training_state(checkpoint)
    config = state.get("config") or {}
    if not config:
        raise DitrError(f"{checkpoint}: no run configuration stored; was it written by ditr train?")
    weights = {k: v.detach().cpu().contiguous() for k, v in state["model"].items()}
    record = {"step": state.get("step"), "epoch": state.get("epoch"), "total_steps": state.get("total_steps"),
              "best": state.get("best"), "metrics": state.get("metrics"), "source": str(checkpoint)}
    metadata = {"format": FORMAT, "version": str(VERSION), "config": json.dumps(to_jsonable(config)),
                "training": json.dumps(to_jsonable(record))}
    path = atomic_write_bytes(out, save(weights, metadata=metadata))
    return {"bundle": str(path), "format": "bundle", "tensors": len(weights),
            "float_values": sum(v.numel() for v in weights.values() if v.is_floating_point()),  # + BN stats
            "bytes": path.stat().st_size, "checkpoint_bytes": Path(checkpoint).stat().st_size}


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
    if meta.get("format") != FORMAT:
        raise DitrError(f"{path}: a safetensors file, but not a ditr bundle (metadata format "
                        f"{meta.get('format')!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise DitrError(f"{path}: bundle version {meta['version']} is newer than this ditr ({VERSION})")
    return load_file(str(path)), json.loads(meta["config"]), json.loads(meta.get("training", "{}"))


def load_bundle(path: str | Path, device: str | torch.device = "cpu",
                prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a bundle, in eval mode, and its run config (``prepare`` as in ``load_model``)."""
    from .training import model_from_config, needs_images

    weights, config, _ = read_bundle(path)
    if not needs_images(config):
        config.setdefault("images", {})["enabled"] = False
    if prepare is not None:
        config = prepare(config)
    model = model_from_config(config)
    model.load_state_dict(weights)
    return model.to(device).eval(), config


def load_any(path: str | Path, device: str | torch.device = "cpu",
             prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None
             ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A model from a training checkpoint or a bundle, whichever ``path`` is."""
    if is_bundle(path):
        return load_bundle(path, device, prepare)
    from .training import load_model

    return load_model(path, device, prepare)
