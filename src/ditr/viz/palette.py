"""Class colours and their legend entries: one palette, so a class has the same colour in every picture."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.patches import Patch

#: The colour of ignored (-1) and unknown class ids in every picture.
UNLABELLED = np.array([0.6, 0.6, 0.6])


def class_colors(num_classes: int) -> np.ndarray:
    """A fixed (C, 3) float palette: tab20 first, then evenly spaced hues."""
    base = matplotlib.colormaps["tab20"](np.arange(20))[:, :3]
    if num_classes <= 20:
        return base[:num_classes]
    extra = matplotlib.colormaps["hsv"](np.linspace(0, 1, num_classes - 20, endpoint=False))[:, :3]
    return np.concatenate([base, extra])


def legend_handles(class_ids: Sequence[int], class_names: Sequence[str], unlabelled: bool = False) -> list[Patch]:
    """Legend entries (colour and name) for ``class_ids``, and a grey "unlabelled" one if asked."""
    palette = class_colors(len(class_names))
    handles = [Patch(color=palette[c], label=class_names[c]) for c in class_ids]
    return handles + ([Patch(color=UNLABELLED, label="unlabelled")] if unlabelled else [])


def has_unlabelled(labels: np.ndarray, num_classes: int) -> bool:
    """Whether any label is -1 (ignore) or an id beyond the classes: drawn grey, named in the legend."""
    return not bool(np.all((labels >= 0) & (labels < num_classes)))


def label_colors(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, 3) uint8 class colours (grey for -1 and unknown ids), the palette of every ditr picture."""
    palette = class_colors(num_classes)
    out = np.tile(UNLABELLED, (len(labels), 1))
    ok = (labels >= 0) & (labels < num_classes)
    out[ok] = palette[labels[ok]]
    return np.round(out * 255).astype(np.uint8)
