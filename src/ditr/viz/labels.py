"""Per-point class labels as pictures: ground truth beside predictions, seen from a camera and from above.

The camera panels draw the points a view sees (with the occlusion test) in class colours over a
dimmed copy of the image, which is where appearance-only classes (a picture on a wall) show; the
top-down panels show a cut-away plan of the scene (points near the ceiling left out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..fileio import atomic_write
from ..projection import ProjectionConfig, project_scene
from ..scene import Scene


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


def _colors(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    out = np.tile(UNLABELLED, (labels.shape[0], 1))  # ignore / unknown: grey
    ok = (labels >= 0) & (labels < len(palette))
    out[ok] = palette[labels[ok]]
    return out


def render_label_comparison(scene: Scene, labels: Mapping[str, np.ndarray], class_names: Sequence[str],
                            path: str | Path, view: int = 0, title: str | None = None) -> Path:
    """One PNG: row 1 the view's image and each labelling seen from that camera; row 2 from above.

    ``labels`` maps a panel title ("ground truth", "ditr" ...) to (N,) class ids (-1 = ignore).
    """
    palette = class_colors(len(class_names))
    panels = list(labels.items())
    ncols = len(panels) + 1
    has_view = bool(scene.views)
    fig = Figure(figsize=(4.2 * ncols, 3.6 * (2 if has_view else 1) + 0.9), layout="constrained")
    axes = fig.subplots(2 if has_view else 1, ncols, squeeze=False)
    coord = scene.coord
    if has_view:
        v = scene.views[view]
        image = v.read_image()
        corr = project_scene(scene, ProjectionConfig())
        vis = corr.visible[view].numpy()
        uv = corr.uv[view].numpy()[vis]
        axes[0, 0].imshow(image)
        axes[0, 0].set_title(f"image ({v.name})")
        for ax, (name, lab) in zip(axes[0, 1:], panels):
            ax.imshow((image * 0.35).astype(np.uint8))
            ax.scatter(uv[:, 0], uv[:, 1], s=4, c=_colors(lab[vis], palette), marker="s", linewidths=0)
            ax.set_title(name)
        for ax in axes[0]:
            ax.set_xlim(0, v.width)
            ax.set_ylim(v.height, 0)
            ax.axis("off")
    row = axes[-1]
    cut = coord[:, 2] < coord[:, 2].max() - 0.25  # cut-away: drop the ceiling
    order = np.argsort(coord[cut, 2])  # draw low points first, so furniture tops stay on top
    xy = coord[cut][order]
    row[0].axis("off")
    row[0].text(0.0, 0.5, "top-down, cut away\nbelow the ceiling", fontsize=11, va="center")
    for ax, (name, lab) in zip(row[1:], panels):
        ax.scatter(xy[:, 0], xy[:, 1], s=1.5, c=_colors(lab[cut][order], palette), linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(f"{name} (top-down)")
        ax.axis("off")
    present = sorted({int(c) for lab in labels.values() for c in np.unique(lab) if 0 <= c < len(class_names)})
    unlabelled = any(has_unlabelled(lab, len(class_names)) for lab in labels.values())
    fig.legend(handles=legend_handles(present, class_names, unlabelled), loc="outside lower center",
               ncols=min(len(present) + unlabelled, 8), fontsize=10)
    if title:
        fig.suptitle(title)
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=90))
    return path


def plot_method_iou(per_method: Mapping[str, Sequence[float | None]], class_names: Sequence[str],
                    path: str | Path, title: str = "per-class IoU on held-out rooms") -> Path:
    """Grouped horizontal bars: one group per class, one bar per method (n/a classes left empty)."""
    methods = list(per_method)
    n = len(class_names)
    height = 0.8 / max(1, len(methods))
    fig = Figure(figsize=(8, 0.35 * n * max(1, len(methods)) / 1.5 + 1.5), layout="constrained")
    ax = fig.subplots()
    for i, method in enumerate(methods):
        values = np.array([np.nan if v is None else v for v in per_method[method]], dtype=float)
        ax.barh(np.arange(n) + i * height, np.nan_to_num(values) * 100, height=height, label=method)
    ax.set_yticks(np.arange(n) + height * (len(methods) - 1) / 2, class_names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    return path
