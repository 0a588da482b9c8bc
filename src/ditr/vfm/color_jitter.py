"""Train-time colour jitter of the camera images (docs/design.md#image-augmentation: brightness 0.4, contrast 0.4,
saturation 0.2, hue 0.1, each view jittered with probability 0.5), in the manner of torchvision's ``ColorJitter``.

A jittered image has new features, so they come either from the VFM run online (``vfm.online``) or
from a feature cache that holds a fixed set of jittered **variants** of every image
(``ditr features --jitter-variants K``). Variant ``k`` of an image is the image jittered with a
generator seeded by the image's content digest and ``k`` (:class:`JitterVariant`), so the same
variant comes out of every process, and the online VFM can reproduce exactly what the cache holds.
Variant 0 is the image as it is.

:meth:`ColorJitter.draw` maps one training draw to a variant: variant 0 with probability ``1 - p``
(the reference leaves those images alone), else one of the ``K`` jittered variants, uniformly. With
``K = 0`` (online only) every jittered draw is a new variant, which is the reference's distribution
exactly; a finite ``K`` keeps the reference's share of unjittered images and replaces its
continuum of jitters by ``K`` of them per image.

Colour changes do not move pixels, so the point-pixel correspondences are unaffected, and jitter
commutes with the horizontal flip (every operation is per pixel or uses the whole-image mean).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

_GREY = torch.tensor([0.299, 0.587, 0.114])
#: Bump when :func:`color_jitter` or the variant seeding changes: cached variants then get new keys.
JITTER_VERSION = 1
#: The reference's strengths: (brightness, contrast, saturation, hue).
REFERENCE_STRENGTH = (0.4, 0.4, 0.2, 0.1)
#: Variant indices of online draws with ``variants = 0`` come from [1, FRESH_VARIANTS]: practically never repeated.
FRESH_VARIANTS = 2**62


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


@dataclass(frozen=True)
class JitterVariant:
    """Jittered variant ``index`` (>= 1) of an image at ``strength``: a pure function of the image."""

    strength: tuple[float, ...]
    index: int

    def __post_init__(self) -> None:
        if self.index < 1:
            raise ValueError(f"jitter variants are numbered from 1 (0 is the image as it is), got {self.index}")

    @property
    def tag(self) -> str:
        """What identifies the variant's pixels in a cache key (the jitter code's version included)."""
        return f"color-jitter-v{JITTER_VERSION} {','.join(f'{x:g}' for x in self.strength)} #{self.index}"

    def seed(self, image_id: str) -> int:
        """The generator seed of this variant of the image with content digest ``image_id``."""
        digest = hashlib.sha256(f"{image_id}|{self.index}".encode()).digest()
        return int.from_bytes(digest[:16], "little")

    def apply(self, image: np.ndarray, image_id: str) -> np.ndarray:
        """The jittered uint8 (H, W, 3) image; ``image_id`` is its content digest (:func:`ditr.cache.image_digest`)."""
        return color_jitter(image, self.strength, np.random.default_rng(self.seed(image_id)))


@dataclass(frozen=True)
class ColorJitter:
    """The jitter a training run draws from: ``strength`` (brightness, contrast, saturation, hue),
    the probability ``p`` that a view is jittered, and how many fixed ``variants`` per image
    (0: a new one every draw, which needs the online VFM)."""

    strength: tuple[float, ...] = REFERENCE_STRENGTH
    p: float = 0.5
    variants: int = 0

    def draw(self, rng: np.random.Generator) -> int:
        """One view's variant: 0 with probability ``1 - p``, else 1..``variants`` uniformly (see the module docs)."""
        if rng.random() >= self.p:
            return 0
        return int(rng.integers(1, (self.variants or FRESH_VARIANTS) + 1))

    def variant(self, index: int) -> JitterVariant | None:
        """The :class:`JitterVariant` of a drawn index; None for 0, the image as it is."""
        return JitterVariant(tuple(self.strength), index) if index else None
