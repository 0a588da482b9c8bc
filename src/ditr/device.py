"""Which torch device to run on: one rule for every command."""

from __future__ import annotations

import os

import torch

from .errors import DitrError


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available; a bare ``cuda`` means this process's GPU under torchrun
    (``LOCAL_RANK``), so ranks on one node do not all land on GPU 0."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DitrError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(device)
