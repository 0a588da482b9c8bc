"""Patch features from a frozen DINOv2 / DINOv3 ViT, as the reference defines them (docs/design.md#2d-features).

Images are resized (bilinear, antialiased) to a multiple of the patch size, scaled to [0, 1] and
normalised with ImageNet statistics; the features are the last layer's tokens after the final
LayerNorm (transformers' ``last_hidden_state``), with the CLS and register tokens dropped, reshaped
to a (D, H/p, W/p) grid. The grid is never upsampled: points look up their patch (see lifting).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..device import resolve_device
from ..errors import DitrError
from .loading import VFMHandle, load_vfm
from .registry import IMAGENET_MEAN, IMAGENET_STD, POS_INTERPOLATIONS, PRECISIONS


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise DitrError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"  # CPU autocast is slower than fp32 on most CPUs and changes the numbers


def _interpolate_pos_encoding(embeddings: Any, tokens: torch.Tensor, height: int, width: int,
                              *, antialias: bool) -> torch.Tensor:
    """Learned position embeddings resized bicubically to the (height/p, width/p) patch grid."""
    pos = embeddings.position_embeddings
    p = embeddings.patch_size if isinstance(embeddings.patch_size, int) else embeddings.patch_size[0]
    gh, gw = height // p, width // p
    n = pos.shape[1] - 1
    side = math.isqrt(n)
    if gh == gw == side:
        return pos
    grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False, antialias=antialias)
    return torch.cat([pos[:, :1], grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)


class VFMBackend:
    """Turns uint8 RGB images into (B, D, H/p, W/p) float32 patch-feature grids."""

    def __init__(self, handle: VFMHandle, device: str = "cpu", precision: str = "auto",
                 pos_interpolation: str = "antialias"):
        if pos_interpolation not in POS_INTERPOLATIONS:
            raise DitrError(f"pos_interpolation must be one of {POS_INTERPOLATIONS}, got {pos_interpolation!r}")
        self.handle = handle
        self.spec = handle.spec
        self.device = resolve_device(device)
        self.precision = _resolve_precision(precision, self.device)
        self.pos_interpolation = pos_interpolation if self.spec.family == "dinov2" else "rope"
        self._model: torch.nn.Module | None = None
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @property
    def model(self) -> torch.nn.Module:
        """The frozen model on this backend's device; weights are read on first use, so a run that
        finds everything in the cache never loads them."""
        if self._model is None:
            model: torch.nn.Module = self.handle.model
            self._model = model.to(self.device).eval().requires_grad_(False)
        return self._model

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    @property
    def settings(self) -> str:
        """The result-affecting settings that are not part of the weights (cache-key component)."""
        return f"precision={self.precision};pos={self.pos_interpolation}"

    def input_size(self, height: int, width: int, resolution: tuple[int, int] | None = None) -> tuple[int, int]:
        """Network input (H', W'): ``resolution`` if given, else the image size rounded to the patch size."""
        p = self.patch_size
        if resolution is not None:
            h, w = resolution
            if h % p or w % p or h <= 0 or w <= 0:
                raise DitrError(f"resolution {h}x{w} must be positive multiples of the patch size {p} "
                                f"(e.g. {max(p, round(h / p) * p)}x{max(p, round(w / p) * p)})")
            return h, w
        return max(p, round(height / p) * p), max(p, round(width / p) * p)

    def preprocess(self, images: Sequence[np.ndarray], size: tuple[int, int], flip: bool = False,
                   device: torch.device | None = None) -> torch.Tensor:
        """Resize (bilinear, antialiased), optionally mirror, scale to [0, 1] and normalise, on
        ``device`` (default: this backend's; data workers prepare images on the CPU)."""
        device = self.device if device is None else device
        batch = []
        for image in images:
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
            x = torch.from_numpy(np.array(image, copy=True, order="C")).to(device)
            x = x.permute(2, 0, 1)[None].float() / 255.0
            if tuple(x.shape[-2:]) != tuple(size):
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            batch.append(x.flip(-1) if flip else x)
        return (torch.cat(batch) - self._mean.to(device)) / self._std.to(device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    @torch.inference_mode()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H', W') normalised pixels -> (B, D, H'/p, W'/p) float32 features."""
        b, _, h, w = pixels.shape
        p = self.patch_size
        model: Any = self.model  # a transformers DINOv2 / DINOv3 model
        if self.spec.family == "dinov2":  # set per call: backends may share one model
            model.embeddings.interpolate_pos_encoding = functools.partial(
                _interpolate_pos_encoding, model.embeddings, antialias=self.pos_interpolation == "antialias")
        with self._autocast():
            tokens = model(pixel_values=pixels).last_hidden_state
        patches = tokens[:, 1 + getattr(model.config, "num_register_tokens", 0):]  # drop CLS and registers
        if patches.shape[1] != (h // p) * (w // p):
            raise RuntimeError(f"expected {(h // p) * (w // p)} patch tokens, got {patches.shape[1]}")
        return patches.float().reshape(b, h // p, w // p, -1).permute(0, 3, 1, 2).contiguous()

    def __call__(self, images: Sequence[np.ndarray], resolution: tuple[int, int] | None = None,
                 flip: bool = False) -> torch.Tensor:
        """Features of same-size images; without ``resolution`` the first image's size is rounded."""
        size = self.input_size(images[0].shape[0], images[0].shape[1], resolution)
        return self.forward(self.preprocess(images, size, flip))


def build_backend(settings: Mapping[str, Any], device: str | torch.device, *,
                  hash_memo: Path | None = None) -> VFMBackend:
    """The frozen VFM of a run's ``vfm`` settings, on ``device`` (``auto``: CUDA when available).

    Reads ``model``, ``checkpoint``, ``download`` (may the weights be fetched from the hub),
    ``precision`` and ``pos_interpolation``; the weights are located now and read on first use.
    ``hash_memo`` remembers checkpoint digests (a feature cache's ``hash_memo``).
    """
    if not settings.get("model"):
        raise DitrError("vfm.model is not set (the 2D foundation model, e.g. dinov2-vitl14-reg)")
    handle = load_vfm(settings["model"], settings.get("checkpoint"),
                      allow_download=bool(settings.get("download", False)), hash_memo=hash_memo)
    return VFMBackend(handle, device=str(device), precision=settings.get("precision", "auto"),
                      pos_interpolation=settings.get("pos_interpolation", "antialias"))
