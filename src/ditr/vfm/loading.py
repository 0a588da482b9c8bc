"""Where a model's weights come from, offline first.

Resolution order for ``load_vfm(name, checkpoint)``:

1. ``checkpoint`` given: a Hugging Face-format directory (``config.json`` + weights), an official
   Meta checkpoint file (``*.pth`` / ``*.pt``, keys converted by :mod:`ditr.vfm.checkpoints`), or a
   ``*.safetensors`` file in either layout.
2. ``$DITR_MODELS/<name>/`` (HF directory) or ``$DITR_MODELS/<name>.pth`` (Meta file).
3. ``tiny-random`` names: a seeded random init (reported everywhere as "random weights").
4. The local Hugging Face cache (``~/.cache/huggingface``), read with ``local_files_only``.
5. A hub download, only with ``allow_download=True`` (CLI ``--download``).

Nothing touches the network unless 5 is reached and allowed; otherwise a :class:`DitrError` lists
the ways to provide the weights. Every loaded model carries an ``identity`` digest of its weights,
which the feature cache keys on.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Dinov2Model, Dinov2WithRegistersModel, DINOv3ViTModel, PreTrainedModel

from ..cache import file_digest, files_digest
from ..errors import DitrError
from .checkpoints import load_meta_state_dict
from .registry import VFMSpec, get_spec

MODELS_ENV = "DITR_MODELS"
_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel, "dinov3_vit": DINOv3ViTModel,
}
_META_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
_HF_WEIGHT_GLOBS = ("*.safetensors", "*.bin")


@dataclass
class LoadedVFM:
    """A frozen model with the facts its outputs must be labelled with."""

    spec: VFMSpec
    model: PreTrainedModel
    identity: str  # digest of the weights; part of every cache key
    source: str  # human-readable origin, e.g. "random weights (seed 0)" or a file path

    @property
    def random_weights(self) -> bool:
        return self.source.startswith("random weights")


def build_random(spec: VFMSpec) -> PreTrainedModel:
    """The architecture with a seeded random init (global RNG state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = _MODEL_CLASSES[spec.model_type](spec.hf_config())
    return model.eval()


def state_dict_digest(model: torch.nn.Module) -> str:
    """Digest of every tensor's name, dtype, shape and bytes (identity of in-memory weights)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _freeze(model: PreTrainedModel) -> PreTrainedModel:
    model.eval()
    model.requires_grad_(False)
    return model


def _load_hf_dir(spec: VFMSpec, path: Path, memo: Path | None) -> LoadedVFM:
    if not (path / "config.json").is_file():
        raise DitrError(f"{path}: not a Hugging Face model directory (no config.json)")
    weights = [f for g in _HF_WEIGHT_GLOBS for f in path.glob(g)]
    if not weights:
        raise DitrError(f"{path}: no weight files (*.safetensors / *.bin) next to config.json")
    cls = _MODEL_CLASSES[spec.model_type]
    try:
        model = cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise DitrError(f"{path}: cannot be loaded as {cls.__name__} ({exc})") from None
    cfg = model.config
    if cfg.model_type != spec.model_type or cfg.hidden_size != spec.hidden_size or cfg.num_hidden_layers != spec.num_layers:
        raise DitrError(f"{path}: holds a {cfg.model_type} model with {cfg.num_hidden_layers} layers of width "
                        f"{cfg.hidden_size}; model {spec.name!r} is {spec.model_type} with {spec.num_layers} x {spec.hidden_size}")
    identity = files_digest([path / "config.json", *weights], memo)
    return LoadedVFM(spec, _freeze(model), identity, f"{path} (Hugging Face format)")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / safetensors errors all mean "not a readable checkpoint"
        raise DitrError(f"{path}: cannot be read as a checkpoint ({type(exc).__name__}: {exc})") from None


def _load_file(spec: VFMSpec, path: Path, memo: Path | None) -> LoadedVFM:
    if path.suffix not in _META_SUFFIXES:
        raise DitrError(f"{path}: expected a directory or a {'/'.join(_META_SUFFIXES)} checkpoint file")
    state = _read_state_dict(path)
    model = _MODEL_CLASSES[spec.model_type](spec.hf_config())
    if "embeddings.cls_token" in state:  # already transformers names (a bare model.safetensors)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise DitrError(f"{path}: does not fit model {spec.name!r} (missing {missing[:4]}, unexpected {unexpected[:4]})")
        layout = "Hugging Face tensors"
    else:
        load_meta_state_dict(model, state, spec, str(path))
        layout = "Meta format"
    return LoadedVFM(spec, _freeze(model), file_digest(path, memo), f"{path} ({layout})")


def load_vfm(name: str, checkpoint: str | Path | None = None, *, allow_download: bool = False,
             hash_memo: Path | None = None) -> LoadedVFM:
    """Resolve and load a frozen, eval-mode model on the CPU in float32 (see the module docstring)."""
    spec = get_spec(name)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise DitrError(f"checkpoint {path} does not exist")
        return _load_hf_dir(spec, path, hash_memo) if path.is_dir() else _load_file(spec, path, hash_memo)
    models_dir = os.environ.get(MODELS_ENV)
    if models_dir:
        for candidate in (Path(models_dir) / spec.name, Path(models_dir) / f"{spec.name}.pth"):
            if candidate.exists():
                return load_vfm(name, candidate, hash_memo=hash_memo)
    if spec.random_weights:
        model = _freeze(build_random(spec))
        return LoadedVFM(spec, model, state_dict_digest(model), f"random weights (seed {spec.seed})")
    return _load_from_hub(spec, allow_download, hash_memo)


def _load_from_hub(spec: VFMSpec, allow_download: bool, memo: Path | None) -> LoadedVFM:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["config.json", "*.safetensors"]
    try:
        local = snapshot_download(spec.hub_id, allow_patterns=patterns, local_files_only=True)
        return _load_hf_dir(spec, Path(local), memo)
    except (LocalEntryNotFoundError, DitrError, OSError):
        if not allow_download:
            raise DitrError(
                f"no weights for {spec.name!r} found offline. Provide them with --checkpoint PATH "
                f"(a Hugging Face directory, or Meta's official .pth file), put them at "
                f"${MODELS_ENV}/{spec.name}/ or ${MODELS_ENV}/{spec.name}.pth, or allow a download of "
                f"{spec.hub_id} with --download") from None
    try:
        local = snapshot_download(spec.hub_id, allow_patterns=patterns)
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise DitrError(f"download of {spec.hub_id} failed ({type(exc).__name__}: {exc}); DINOv3 repositories "
                        "are gated: accept the licence on huggingface.co and log in (hf auth login)") from None
    return _load_hf_dir(spec, Path(local), memo)
