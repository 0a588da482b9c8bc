"""Where a model's weights come from, offline first.

Resolution order for ``load_vfm(name, checkpoint)``:

1. ``checkpoint`` given: a Hugging Face-format directory (``config.json`` + weights), an official
   Meta checkpoint file (``*.pth`` / ``*.pt``, keys converted by :mod:`ditr.vfm.checkpoints`), or a
   ``*.safetensors`` file in either layout.
2. ``$DITR_MODELS/<name>/`` (HF directory) or ``$DITR_MODELS/<name>.pth`` (Meta file); ``<name>`` is
   the registry name, also when the model was named by its Hugging Face id (``facebook/dinov2-base``).
3. ``tiny-random`` names: a seeded random init (reported everywhere as "random weights");
   names with packaged weights (``demo-vit-rooms``): the file shipped in ``ditr/vfm/weights/``.
4. The local Hugging Face cache (``~/.cache/huggingface``), read with ``local_files_only``.
5. A hub download, only with ``allow_download=True`` (CLI ``--download``).

Nothing touches the network unless 5 is reached and allowed; otherwise a :class:`DitrError` lists
the ways to provide the weights. Resolving returns a :class:`VFMHandle` carrying an ``identity``
digest of the weights, which the feature cache keys on; the weights themselves are read on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import Dinov2Model, Dinov2WithRegistersModel, DINOv3ViTModel, PreTrainedModel

from ..cache import file_digest, files_digest
from ..errors import DitrError
from .checkpoints import config_for_state_dict, load_meta_state_dict
from .registry import VFMSpec, get_spec

MODELS_ENV = "DITR_MODELS"
#: Where weights that ship inside the package live (package data, see pyproject.toml).
PACKAGED_WEIGHTS_DIR = Path(__file__).parent / "weights"
_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel, "dinov3_vit": DINOv3ViTModel,
}
_META_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class WeightsNotFound(DitrError):
    """No weights for a model offline (and no download allowed): the message lists the ways to give them."""

    def __init__(self, spec: VFMSpec, message: str):
        self.spec = spec
        super().__init__(message)

_HF_WEIGHT_GLOBS = ("*.safetensors", "*.bin")


class VFMHandle:
    """Resolved weights: identified now, read on first use of :attr:`model`.

    The identity (a digest of the files or tensors) is all the feature cache needs, so a run whose
    features are all cached never reads a multi-GB checkpoint.
    """

    def __init__(self, spec: VFMSpec, identity: str, source: str, loader: Callable[[], PreTrainedModel],
                 random_weights: bool = False):
        self.spec = spec
        self.identity = identity  # digest of the weights; part of every cache key
        self.source = source  # human-readable origin, e.g. "random weights (seed 0)" or a file path
        self.random_weights = random_weights  # outputs must then be labelled "random weights"
        self._loader = loader
        self._model: PreTrainedModel | None = None

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> PreTrainedModel:
        """The frozen, eval-mode float32 model on the CPU (loaded and checked on first access)."""
        if self._model is None:
            self._model = _freeze(self._loader())
        return self._model

    @classmethod
    def of_model(cls, spec: VFMSpec, model: PreTrainedModel, source: str, random_weights: bool) -> VFMHandle:
        """Wrap weights already in memory (identified by their tensors)."""
        handle = cls(spec, state_dict_digest(model), source, lambda: model, random_weights)
        handle._model = _freeze(model)
        return handle


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


def _check_hf_config(spec: VFMSpec, path: Path) -> None:
    """Read config.json up front so a wrong directory fails before any weights are read."""
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise DitrError(f"{path}: not a Hugging Face model directory (config.json: {exc})") from None
    found = (cfg.get("model_type"), cfg.get("hidden_size"), cfg.get("num_hidden_layers"))
    if found != (spec.model_type, spec.hidden_size, spec.num_layers):
        raise DitrError(f"{path}: holds a {found[0]} model with {found[2]} layers of width {found[1]}; "
                        f"model {spec.name!r} is {spec.model_type} with {spec.num_layers} x {spec.hidden_size}")


def _hf_dir(spec: VFMSpec, path: Path, memo: Path | None) -> VFMHandle:
    _check_hf_config(spec, path)
    weights = [f for g in _HF_WEIGHT_GLOBS for f in path.glob(g)]
    if not weights:
        raise DitrError(f"{path}: no weight files (*.safetensors / *.bin) next to config.json")
    cls = _MODEL_CLASSES[spec.model_type]

    def load() -> PreTrainedModel:
        try:
            return cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise DitrError(f"{path}: cannot be loaded as {cls.__name__} ({exc})") from None

    identity = files_digest([path / "config.json", *weights], memo)
    return VFMHandle(spec, identity, f"{path} (Hugging Face format)", load)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / safetensors errors all mean "not a readable checkpoint"
        raise DitrError(f"{path}: cannot be read as a checkpoint ({type(exc).__name__}: {exc})") from None


def _file(spec: VFMSpec, path: Path, memo: Path | None, source: str = "checkpoint file") -> VFMHandle:
    if path.suffix not in _META_SUFFIXES:
        raise DitrError(f"{path}: expected a directory or a {'/'.join(_META_SUFFIXES)} checkpoint file")

    def load() -> PreTrainedModel:
        state = _read_state_dict(path)
        if "embeddings.cls_token" in state:  # already transformers names (a bare model.safetensors)
            model = _MODEL_CLASSES[spec.model_type](spec.hf_config())
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise DitrError(f"{path}: does not fit model {spec.name!r} "
                                f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
        else:
            model = _MODEL_CLASSES[spec.model_type](config_for_state_dict(spec, state))
            load_meta_state_dict(model, state, spec, str(path))
        return model

    return VFMHandle(spec, file_digest(path, memo), f"{path} ({source})", load)


def _packaged(spec: VFMSpec, packaged: str, memo: Path | None) -> VFMHandle:
    """The weights file ``packaged`` that ships in the package, labelled with the spec's note on what it is."""
    path = PACKAGED_WEIGHTS_DIR / packaged
    if not path.is_file():
        raise DitrError(f"{path}: the packaged weights of {spec.name!r} are missing from this installation; "
                        "reinstall ditr, or retrain them with python -m ditr.vfm.train_teacher (docs/demo-teacher.md)")
    return _file(spec, path, memo, f"packaged weights: {spec.weights_note}")


def load_vfm(name: str, checkpoint: str | Path | None = None, *, allow_download: bool = False,
             hash_memo: Path | None = None) -> VFMHandle:
    """Resolve a model's weights (see the module docstring); they are read on first use of ``.model``.

    ``name`` is a registered model or a Hugging Face repository id (:mod:`ditr.vfm.hub`)."""
    spec = get_spec(name, allow_download=allow_download)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise DitrError(f"checkpoint {path} does not exist")
        return _hf_dir(spec, path, hash_memo) if path.is_dir() else _file(spec, path, hash_memo)
    models_dir = os.environ.get(MODELS_ENV)
    if models_dir:
        for candidate in (Path(models_dir) / spec.name, Path(models_dir) / f"{spec.name}.pth"):
            if candidate.exists():
                return load_vfm(name, candidate, hash_memo=hash_memo)
    if spec.random_weights:
        return VFMHandle.of_model(spec, build_random(spec), f"random weights (seed {spec.seed})", True)
    if spec.packaged_weights is not None:
        return _packaged(spec, spec.packaged_weights, hash_memo)
    return _load_from_hub(spec, allow_download, hash_memo)


def _load_from_hub(spec: VFMSpec, allow_download: bool, memo: Path | None) -> VFMHandle:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if spec.hub_id is None:
        raise DitrError(f"{spec.name!r} has no Hugging Face repository: give its weights with --checkpoint PATH")
    patterns = ["config.json", "*.safetensors"]
    try:
        local = snapshot_download(spec.hub_id, allow_patterns=patterns, local_files_only=True)
    except (LocalEntryNotFoundError, OSError):
        local = None
    if local is not None and not any(Path(local).glob("*.safetensors")):
        local = None  # only config.json cached so far (a repository id's architecture was read)
    if local is None and not allow_download:
        raise WeightsNotFound(spec,
            f"no weights for {spec.name!r} found offline. Provide them with --checkpoint PATH "
            f"(a Hugging Face directory, or Meta's official .pth file), put them at "
            f"${MODELS_ENV}/{spec.name}/ or ${MODELS_ENV}/{spec.name}.pth, or allow a download of "
            f"{spec.hub_id} with --download")
    if local is None:
        try:
            local = snapshot_download(spec.hub_id, allow_patterns=patterns)
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise DitrError(f"download of {spec.hub_id} failed ({type(exc).__name__}: {exc}); DINOv3 repositories "
                            "are gated: accept the licence on huggingface.co and log in (hf auth login)") from None
    return _hf_dir(spec, Path(local), memo)
