"""Train-time colour jitter of the camera images (docs/design.md#image-augmentation: brightness 0.4, contrast 0.4,
saturation 0.2, hue 0.1), in the manner of torchvision's ``ColorJitter``.

A jittered image has new features, so this only works when the VFM runs online (``vfm.online``);
the feature cache holds features of the unjittered (and mirrored) images only. Colour changes do
not move pixels, so the point-pixel correspondences are unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

_GREY = torch.tensor([0.299, 0.587, 0.114])


def _grey(img: torch.Tensor) -> torch.Tensor:
    return (img * _GREY[:, None, None]).sum(0, keepdim=True)


def _rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img
    maxc, _ = img.max(0)
    minc, _ = img.min(0)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([h, s, maxc])


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv
    k = (torch.tensor([5.0, 3.0, 1.0])[:, None, None] + h * 6.0) % 6.0
    return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def color_jitter(image: np.ndarray, strength: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Jitter one uint8 (H, W, 3) image; the four adjustments are applied in a random order.

    ``strength`` = (brightness, contrast, saturation, hue): factors uniform in ``[1 - x, 1 + x]``
    for the first three, a hue shift uniform in ``[-hue, hue]`` (fraction of the colour circle).
    """
    brightness, contrast, saturation, hue = strength
    img = torch.tensor(image).permute(2, 0, 1).float() / 255.0  # a copy: images may be read-only
    for op in rng.permutation(4):
        if op == 0 and brightness > 0:
            img = (img * rng.uniform(1 - brightness, 1 + brightness)).clamp(0, 1)
        elif op == 1 and contrast > 0:
            f = rng.uniform(1 - contrast, 1 + contrast)
            img = (f * img + (1 - f) * _grey(img).mean()).clamp(0, 1)
        elif op == 2 and saturation > 0:
            f = rng.uniform(1 - saturation, 1 + saturation)
            img = (f * img + (1 - f) * _grey(img)).clamp(0, 1)
        elif op == 3 and hue > 0:
            hsv = _rgb_to_hsv(img)
            hsv[0] = (hsv[0] + rng.uniform(-hue, hue)) % 1.0
            img = _hsv_to_rgb(hsv).clamp(0, 1)
    return (img * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
