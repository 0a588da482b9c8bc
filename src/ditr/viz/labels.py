"""Per-point class labels as pictures: ground truth beside predictions, seen from a camera and from above.

The camera panels draw the points a view sees (with the occlusion test) in class colours over a
dimmed copy of the image, which is where appearance-only classes (a picture on a wall) show; the
top-down panels show a plan of the scene with its ceiling cut away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..fileio import atomic_write
from ..projection import ProjectionConfig, estimate_point_spacing, project_scene
from ..scene import Scene
from .palette import has_unlabelled, label_colors, legend_handles
from .render import paint_view, topdown_raster


def render_label_comparison(scene: Scene, labels: Mapping[str, np.ndarray], class_names: Sequence[str],
                            path: str | Path, view: int = 0, title: str | None = None) -> Path:
    """One PNG: row 1 the view's image and each labelling seen from that camera; row 2 from above.

    ``labels`` maps a panel title ("ground truth", "ditr" ...) to (N,) class ids (-1 = ignore).
    The panels are the rasters of ``ditr predict``'s pictures (:func:`ditr.viz.render.paint_view`,
    :func:`ditr.viz.render.topdown_raster`): closed surfaces, not specks, at any point density.
    """
    num_classes = len(class_names)
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
        uv, depth = corr.uv[view].numpy()[vis], corr.depth[view].numpy()[vis]
        spacing = estimate_point_spacing(torch.from_numpy(coord))
        axes[0, 0].imshow(image)
        axes[0, 0].set_title(f"image ({v.name})")
        for ax, (name, lab) in zip(axes[0, 1:], panels):
            ax.imshow(paint_view(image, uv, depth, label_colors(lab[vis], num_classes), spacing, v.intrinsics[0, 0]))
            ax.set_title(name)
        for ax in axes[0]:
            ax.axis("off")
    row = axes[-1]
    row[0].axis("off")
    for ax, (name, lab) in zip(row[1:], panels):
        raster, extent, cut = topdown_raster(coord, label_colors(lab, num_classes))
        ax.imshow(raster, extent=extent, interpolation="nearest")
        ax.set_title(f"{name} (from above)")
        ax.axis("off")
    row[0].text(0.0, 0.5, "from above" + (",\nceiling cut away" if cut else ""), fontsize=11, va="center")
    present = sorted({int(c) for lab in labels.values() for c in np.unique(lab) if 0 <= c < num_classes})
    unlabelled = any(has_unlabelled(lab, num_classes) for lab in labels.values())
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
