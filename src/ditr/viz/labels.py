"""Per-point class labels as pictures: ground truth beside predictions, seen from inside the scene.

The camera panels draw the points a view sees (with the occlusion test) in class colours over a
dimmed copy of the image, which is where appearance-only classes (a picture on a wall) show; the
wide-angle panels show the same labels from the same spot with a wider field of view, so the walls
and what hangs on them are seen in context (a view from above would hide them).
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..fileio import atomic_write
from ..projection import ProjectionConfig, project_scene
from ..scene import Scene
from .palette import label_colors, legend_handles


#: Colours of the comparison panel: only the first method right, only the second, both, neither.
COMPARE_COLORS = np.array([[0.10, 0.75, 0.20], [0.90, 0.15, 0.15], [0.80, 0.80, 0.80], [0.35, 0.35, 0.35]])
#: Horizontal field of view (degrees) and size (pixels) of the wide-angle panels.
WIDE_FOV, WIDE_SIZE = 100.0, (480, 360)
#: Gaps between points up to this many pixels wide are closed in the wide-angle panels.
WIDE_FILL = 3


def _paint(uv: np.ndarray, depth: np.ndarray, colors: np.ndarray, shape: tuple[int, int], focal: float,
           spacing: float, background: np.ndarray, fill: int = 0) -> np.ndarray:
    """``background`` (H, W, 3 floats) with the points drawn as squares about their spacing wide at
    their depth (so surfaces close), the nearest point on top; gaps up to ``fill`` pixels wide take
    their neighbours' colour (randomly sampled points leave holes a plain background would show)."""
    from .render import MAX_SPLAT, _fill_holes, _splat

    radius = np.clip(np.ceil(0.6 * spacing * focal / np.maximum(depth, 1e-3)), 1, MAX_SPLAT).astype(np.int64)
    cells, paint = _splat(uv, depth, colors, shape, radius)
    image = background.reshape(-1, 3).copy()
    image[cells] = paint
    filled = np.zeros(image.shape[0], bool)
    filled[cells] = True
    return _fill_holes(image.reshape(*shape, 3), filled.reshape(shape), fill)


def _wide_camera(cam_to_world: np.ndarray, coord: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(uv, depth, in-frame mask) of the points seen by a wide-angle pinhole camera with the pose
    ``cam_to_world`` (OpenCV axes), and its focal length in pixels. Occlusion is left to the
    painter (nearest point on top)."""
    width, height = WIDE_SIZE
    focal = width / 2 / np.tan(np.radians(WIDE_FOV) / 2)
    cam = (coord - cam_to_world[:3, 3]) @ cam_to_world[:3, :3]
    depth = cam[:, 2]
    front = depth > 0.05
    uv = np.stack([focal * cam[:, 0] / np.where(front, depth, 1) + width / 2,
                   focal * cam[:, 1] / np.where(front, depth, 1) + height / 2], 1)
    ok = front & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    return uv, depth, ok, focal


def render_label_comparison(scene: Scene, labels: Mapping[str, np.ndarray], class_names: Sequence[str],
                            path: str | Path, view: int = 0, title: str | None = None,
                            compare: tuple[str, str] | None = None) -> Path:
    """One PNG of a scene seen from inside, from camera ``view``: row 1 its image and each labelling
    of the points it sees painted over it; row 2 the same labellings from a wide-angle camera at the
    same spot (walls, doors and floor in context).

    ``labels`` maps a panel title ("ground truth", "ditr" ...) to (N,) class ids (-1 = ignore).
    ``compare=(a, b)`` with a "ground truth" entry adds a wide panel of where ``a`` is right and
    ``b`` wrong (green) and the reverse (red).
    """
    import torch

    from ..projection import estimate_point_spacing

    if not scene.views:
        raise ValueError(f"{scene.name}: a scene without views cannot be drawn from a camera")
    num_classes = len(class_names)
    panels = list(labels.items())
    ncols = len(panels) + 1
    fig = Figure(figsize=(3.6 * ncols, 6.4), layout="constrained")
    axes = fig.subplots(2, ncols, squeeze=False)
    coord = scene.coord
    spacing = estimate_point_spacing(torch.from_numpy(coord))
    v = scene.views[view]
    image = v.read_image().astype(np.float64) / 255
    corr = project_scene(dataclasses.replace(scene, views=[v]), ProjectionConfig())
    vis = corr.visible[0].numpy()
    uv, depth = corr.uv[0].numpy()[vis], corr.depth[0].numpy()[vis]
    axes[0, 0].imshow(image)
    axes[0, 0].set_title(f"image ({v.name})")
    for ax, (name, lab) in zip(axes[0, 1:], panels):
        ax.imshow(_paint(uv, depth, label_colors(lab[vis], num_classes) / 255, image.shape[:2],
                         float(v.intrinsics[0, 0]), spacing, image * 0.35))
        ax.set_title(name)
    wide_uv, wide_depth, ok, focal = _wide_camera(v.cam_to_world, coord)
    order = np.flatnonzero(ok)
    blank = np.ones((WIDE_SIZE[1], WIDE_SIZE[0], 3))
    for ax, (name, lab) in zip(axes[1, 1:], panels):
        ax.imshow(_paint(wide_uv[order], wide_depth[order], label_colors(lab[order], num_classes) / 255,
                         blank.shape[:2], focal, spacing, blank, WIDE_FILL))
        ax.set_title(f"{name}, wide angle ({WIDE_FOV:.0f} deg)")
    if compare is not None and "ground truth" in labels:
        gt = labels["ground truth"]
        a_ok, b_ok = labels[compare[0]] == gt, labels[compare[1]] == gt
        kind = np.select([a_ok & ~b_ok, b_ok & ~a_ok, a_ok & b_ok], [0, 1, 2], 3)
        axes[1, 0].imshow(_paint(wide_uv[order], wide_depth[order], COMPARE_COLORS[kind[order]], blank.shape[:2],
                                 focal, spacing, blank, WIDE_FILL))
        axes[1, 0].set_title(f"green: only {compare[0]} right, red: only {compare[1]} right\n"
                             "light grey: both right, dark grey: both wrong", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    present = sorted({int(c) for lab in labels.values() for c in np.unique(lab) if 0 <= c < num_classes})
    fig.legend(handles=legend_handles(present, class_names), loc="outside lower center",
               ncols=min(len(present), 8), fontsize=9)
    if title:
        fig.suptitle(title)
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=90))
    return path


def plot_method_iou(per_method: Mapping[str, Sequence[float | None]], class_names: Sequence[str],
                    path: str | Path, title: str = "per-class IoU on held-out rooms",
                    errors: Mapping[str, Sequence[float | None]] | None = None) -> Path:
    """Grouped bars: one group per class along x, one bar per method (n/a classes left empty); with
    ``errors`` (e.g. the standard deviation over seeds, same units as the values) a whisker on each bar."""
    methods = list(per_method)
    n = len(class_names)
    width = 0.84 / max(1, len(methods))
    fig = Figure(figsize=(max(9.0, 0.13 * n * len(methods) + 2.5), 5.2), layout="constrained")
    ax = fig.subplots()
    for i, method in enumerate(methods):
        values = np.array([np.nan if v is None else v for v in per_method[method]], dtype=float)
        spread = None
        if errors is not None and method in errors:
            spread = np.array([0.0 if v is None else v for v in errors[method]], dtype=float) * 100
        ax.bar(np.arange(n) + (i - (len(methods) - 1) / 2) * width, np.nan_to_num(values) * 100, width=width,
               label=method, yerr=spread, error_kw={"elinewidth": 0.8, "capsize": 1.2, "ecolor": "0.2"})
    ax.set_xticks(np.arange(n), class_names, rotation=30, ha="right")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)" + ("; whiskers: one standard deviation" if errors is not None else ""))
    ax.set_title("\n".join(textwrap.wrap(title, 140)), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(4, len(methods)), fontsize=9)
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    return path


def plot_paired_differences(differences: Mapping[str, Mapping[str, tuple[float, float, float] | None]],
                            path: str | Path, title: str, xlabel: str = "IoU difference (points)") -> Path:
    """A forest plot of paired per-class differences: one row per class, one marker per set (e.g.
    validation, test) at the mean difference with a line over its 95% interval, and a line at zero.

    ``differences[set][class]`` is ``(mean, low, high)`` in points, or None where the class is absent
    from that set. A reader sees at once which intervals leave zero, and on which side."""
    sets = list(differences)
    classes = list(dict.fromkeys(name for per_set in differences.values() for name in per_set))
    fig = Figure(figsize=(7.5, 0.42 * len(classes) + 1.6), layout="constrained")
    ax = fig.subplots()
    offsets = np.linspace(-0.18, 0.18, len(sets)) if len(sets) > 1 else np.zeros(1)
    for offset, name in zip(offsets, sets):
        rows = [(i, v) for i, c in enumerate(classes) if (v := differences[name].get(c)) is not None]
        y = np.array([i for i, _ in rows], dtype=float) + offset
        mean, low, high = (np.array([v[k] for _, v in rows], dtype=float) for k in range(3))
        ax.errorbar(mean, y, xerr=[mean - low, high - mean], fmt="o", markersize=4, capsize=2.5, label=name)
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.set_yticks(np.arange(len(classes)), classes)
    ax.set_ylim(len(classes) - 0.5, -0.5)
    ax.set_xlabel(xlabel + "; lines: 95% interval over seeds")
    ax.set_title("\n".join(line for part in title.split("\n") for line in textwrap.wrap(part, 80)), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=len(sets), fontsize=9)
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    return path
