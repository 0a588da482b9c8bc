"""Hugging Face repository ids as model names (``--model facebook/dinov2-base``).

An id of a model ditr registers (its ``hub_id``) is that model. Any other DINOv2 / DINOv3 repository
is described by its own ``config.json``, read from the local Hugging Face cache (offline), or fetched
once when a download is allowed (``--download``); its weights are then resolved like a registered
model's (:func:`ditr.vfm.loading.load_vfm`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from ..errors import DitrError
from .spec import VFMSpec

#: ``owner/name`` as the hub spells repositories.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_FAMILIES = {"dinov2": "dinov2", "dinov2_with_registers": "dinov2", "dinov3_vit": "dinov3"}


def is_hub_id(name: str) -> bool:
    return bool(HUB_ID.match(name.strip()))


def hub_config_path(repo_id: str, allow_download: bool) -> Path:
    """The repository's ``config.json`` in the local cache; fetched only when ``allow_download``."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, "config.json", local_files_only=True))
    except (LocalEntryNotFoundError, OSError):
        if not allow_download:
            raise DitrError(f"model {repo_id!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}): add "
                            f"--download, or fetch it first (hf download {repo_id})") from None
    try:
        return Path(hf_hub_download(repo_id, "config.json"))
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise DitrError(f"download of {repo_id}'s config.json failed ({type(exc).__name__}: {exc}); gated "
                        "repositories (DINOv3) need the licence accepted on huggingface.co and hf auth login") from None


def spec_from_config(repo_id: str, config: dict[str, Any], where: str | Path) -> VFMSpec:
    """The architecture a transformers DINOv2 / DINOv3 ``config.json`` describes, named ``repo_id``."""
    model_type = config.get("model_type")
    if model_type not in _FAMILIES:
        raise DitrError(f"{where}: model_type {model_type!r} is not a DINO ViT ditr runs "
                        f"({', '.join(_FAMILIES)})")
    family = _FAMILIES[model_type]

    def field(key: str, default: Any = None, low: int = 1) -> int:
        value = config.get(key, default)
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value != int(value) or value < low):
            raise DitrError(f"{where}: {key} must be a whole number >= {low}, got {value!r}")
        return int(value)

    common: dict[str, Any] = dict(patch_size=field("patch_size"), hidden_size=field("hidden_size"),
                                  num_layers=field("num_hidden_layers"), num_heads=field("num_attention_heads"),
                                  num_registers=field("num_register_tokens", 0, low=0),
                                  image_size=field("image_size", 224 if family == "dinov3" else 518))
    if family == "dinov3":
        extra: dict[str, Any] = dict(intermediate_size=field("intermediate_size"),
                                     swiglu=bool(config.get("use_gated_mlp", False)),
                                     qkv_bias=bool(config.get("query_bias", True)))
    else:
        extra = dict(mlp_ratio=field("mlp_ratio", 4), swiglu=bool(config.get("use_swiglu_ffn", False)),
                     qkv_bias=bool(config.get("qkv_bias", True)))
    return VFMSpec(repo_id, family, hub_id=repo_id, **common, **extra)


def hub_spec(repo_id: str, allow_download: bool = False) -> VFMSpec:
    """The architecture of an unregistered hub repository, from its cached (or fetched) ``config.json``."""
    path = hub_config_path(repo_id, allow_download)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DitrError(f"{path}: cannot be read as a model's config.json ({exc})") from None
    if not isinstance(config, dict):
        raise DitrError(f"{path}: config.json must hold a JSON object")
    return spec_from_config(repo_id, config, path)
