"""Projected points drawn over their images, so a person sees at a glance whether calibration is right.

Visible points are coloured by camera depth; occluded points (in the image, hidden by a surface)
are drawn as small magenta dots underneath, so occlusion mistakes show up as colour in odd places.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..fileio import atomic_write
from ..projection import Correspondences
from ..scene import Scene

#: At most this many markers per category per view keep the figure readable and fast.
MAX_MARKERS = 60_000


def _subsample(idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return idx if idx.size <= MAX_MARKERS else rng.choice(idx, MAX_MARKERS, replace=False)


def render_overlays(scene: Scene, corr: Correspondences, out_dir: str | Path, *,
                    point_size: float | None = None, seed: int = 0) -> list[Path]:
    """Write ``<out_dir>/<view>.png`` per view: image, visible points by depth, occluded points."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    uv_all = corr.uv.cpu().numpy()
    depth_all = corr.depth.cpu().numpy()
    visible_all = corr.visible.cpu().numpy()
    occluded_all = corr.in_frame.cpu().numpy() & ~visible_all
    written = []
    for i, view in enumerate(scene.views):
        image = view.read_image()
        h, w = image.shape[:2]
        dpi = 100
        scale = 1280 / w if w > 1280 else max(1.0, 720 / w)  # small images are enlarged for the legend
        fig = Figure(figsize=(w * scale / dpi, h * scale / dpi + 0.5), dpi=dpi)
        ax = fig.add_axes((0, 0, 1, h * scale / dpi / (h * scale / dpi + 0.5)))
        ax.imshow(image)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.axis("off")
        size = point_size if point_size is not None else max(0.5, 4.0 * scale * min(w, h) / 480)
        occ = _subsample(np.flatnonzero(occluded_all[i]), rng)
        vis = _subsample(np.flatnonzero(visible_all[i]), rng)
        ax.scatter(uv_all[i, occ, 0], uv_all[i, occ, 1], s=size * 0.5, c="magenta", marker=".",
                   linewidths=0, alpha=0.6)
        sc = ax.scatter(uv_all[i, vis, 0], uv_all[i, vis, 1], s=size, c=depth_all[i, vis], cmap="turbo",
                        marker=".", linewidths=0)
        fig.text(0.01, 1 - 0.25 / (h * scale / dpi + 0.5),
                 f"{scene.name} / {view.name}: {int(visible_all[i].sum())} visible (colour = depth), "
                 f"{int(occluded_all[i].sum())} occluded (magenta)", fontsize=9, va="center")
        if vis.size:
            cax = fig.add_axes((0.75, 1 - 0.4 / (h * scale / dpi + 0.5), 0.22, 0.12 / (h * scale / dpi + 0.5)))
            cb = fig.colorbar(sc, cax=cax, orientation="horizontal")
            cb.ax.tick_params(labelsize=7)
            cb.set_label("depth (m)", fontsize=7)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in view.name)
        path = out_dir / f"{safe}.png"
        atomic_write(path, lambda fh, fig=fig, dpi=dpi: fig.savefig(fh, format="png", dpi=dpi))
        written.append(path)
    return written
