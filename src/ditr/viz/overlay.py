"""Projected points drawn over their images, so a person sees at a glance whether calibration is right.

Visible points are dots coloured by camera depth, drawn far to near so near ones stay on top;
occluded points (in the image, hidden by a surface) are smaller magenta dots drawn over them, so
that where occlusion is decided shows, and its mistakes show up as magenta in odd places. Points
outside the image are not drawn.

The dot size follows the picture (a share of its diagonal), and shrinks where the points are so
dense that big dots would hide the photo. The colour scale spans the 2nd-98th percentile of the
depths shown, rounded outwards to round numbers: a fixed 0-100 m scale paints every point of a
street's first 20 m one colour. The title, colour bar and legend sit in a white band above the
photo, so the photo never hides them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..fileio import atomic_write
from ..projection import Correspondences
from ..scene import Scene
from .render import safe_stem

#: At most this many markers per category per view keep the figure readable and fast.
MAX_MARKERS = 60_000
#: Dot diameter as a share of the drawn image's diagonal, and its smallest size in pixels.
DOT_SHARE, MIN_DOT_PX = 0.0045, 2.5
#: Dots may cover at most this share of the image (summed dot areas), so the photo stays visible.
MAX_COVER = 0.3
#: The colour scale spans these percentiles of the depths shown.
DEPTH_PERCENTILES = (2.0, 98.0)
#: Pictures are drawn at about this width (pixels); small images are enlarged so the text fits.
MAX_WIDTH, MIN_WIDTH = 1280, 720
#: Height of the white band above the photo (inches at 100 dpi) that holds title, colour bar, legend.
HEADER_IN = 1.0
OCCLUDED_COLOR = "magenta"
#: Occluded dots are this much smaller than visible ones, so the depth colour around them still shows.
OCCLUDED_SHARE = 0.6


def dot_diameter(width: float, height: float, count: int) -> float:
    """Dot diameter in pixels for ``count`` dots on a ``width`` x ``height`` picture.

    About ``DOT_SHARE`` of the diagonal, made smaller where the dots would cover more than
    ``MAX_COVER`` of the picture, and never below ``MIN_DOT_PX`` (a dot must stay visible).
    """
    diameter = DOT_SHARE * math.hypot(width, height)
    if count > 0:
        diameter = min(diameter, 2 * math.sqrt(MAX_COVER * width * height / (count * math.pi)))
    return max(MIN_DOT_PX, diameter)


def nice_step(span: float) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) that cuts ``span`` into about 5 parts."""
    raw = max(span, 1e-6) / 5
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw * (1 - 1e-9))


def depth_scale(depth: np.ndarray) -> tuple[float, float]:
    """(low, high) of the colour scale: the ``DEPTH_PERCENTILES`` of ``depth`` rounded outwards to round numbers.

    Outliers (a far building behind a near room) no longer squeeze the rest into one colour; points
    nearer or farther than the range take the end colours. Empty input gives (0, 1).
    """
    if depth.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(depth, DEPTH_PERCENTILES))
    step = nice_step(hi - lo)
    low, high = math.floor(lo / step) * step, math.ceil(hi / step) * step
    if high <= low:
        high = low + step
    return max(0.0, low), high


def _subsample(idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return idx if idx.size <= MAX_MARKERS else rng.choice(idx, MAX_MARKERS, replace=False)


def _marker_area(diameter_px: float, dpi: float) -> float:
    """Matplotlib's scatter size (points squared) of a dot ``diameter_px`` pixels wide."""
    return (diameter_px * 72 / dpi) ** 2


def _number(value: float) -> str:
    return f"{value:g}"


def render_overlays(scene: Scene, corr: Correspondences, out_dir: str | Path, *,
                    point_size: float | None = None, seed: int = 0) -> list[Path]:
    """Write ``<out_dir>/<view>.png`` per view: image, visible points by depth, occluded points.

    ``point_size`` is the dot diameter in pixels of the written picture (default: :func:`dot_diameter`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    uv_all = corr.uv.cpu().numpy()
    depth_all = corr.depth.cpu().numpy()
    visible_all = corr.visible.cpu().numpy()
    occluded_all = corr.in_frame.cpu().numpy() & ~visible_all
    written = []
    dpi = 100
    for i, view in enumerate(scene.views):
        image = view.read_image()
        h, w = image.shape[:2]
        scale = MAX_WIDTH / w if w > MAX_WIDTH else max(1.0, MIN_WIDTH / w)
        width_in, image_in = w * scale / dpi, h * scale / dpi
        fig = Figure(figsize=(width_in, image_in + HEADER_IN), dpi=dpi)
        ax = fig.add_axes((0, 0, 1, image_in / (image_in + HEADER_IN)))
        ax.imshow(image, extent=(0, w, h, 0))  # pixel (i, j) covers [i, i+1) x [j, j+1), as uv counts
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.axis("off")
        occ = _subsample(np.flatnonzero(occluded_all[i]), rng)
        vis = _subsample(np.flatnonzero(visible_all[i]), rng)
        vis = vis[np.argsort(-depth_all[i, vis], kind="stable")]  # far first: near dots end on top
        size = point_size or dot_diameter(w * scale, h * scale, occ.size + vis.size)
        low, high = depth_scale(depth_all[i, vis])
        sc = ax.scatter(uv_all[i, vis, 0], uv_all[i, vis, 1], s=_marker_area(size, dpi), c=depth_all[i, vis],
                        cmap="turbo", norm=Normalize(low, high), marker="o", linewidths=0)
        ax.scatter(uv_all[i, occ, 0], uv_all[i, occ, 1], s=_marker_area(OCCLUDED_SHARE * size, dpi),
                   c=OCCLUDED_COLOR, marker="o", linewidths=0)
        _header(fig, sc if vis.size else None, (low, high), image_in, width_in,
                title=f"{scene.name} / {view.name}",
                counts=(int(visible_all[i].sum()), int(occluded_all[i].sum())))
        path = out_dir / f"{safe_stem(view.name)}.png"
        atomic_write(path, lambda fh, fig=fig: fig.savefig(fh, format="png", dpi=dpi))
        written.append(path)
    return written


def _header(fig: Figure, mappable: ScalarMappable | None, scale: tuple[float, float], image_in: float,
            width_in: float, *, title: str, counts: tuple[int, int]) -> None:
    """The band above the photo: title, the depth colour bar (range stated) and the dot legend."""
    total_in = image_in + HEADER_IN
    fig.text(0.1 / width_in, 1 - 0.22 / total_in, title, fontsize=11, weight="bold", va="center")
    if mappable is not None:
        low, high = scale
        cax = fig.add_axes((0.15 / width_in, 1 - 0.72 / total_in, 0.45, 0.16 / total_in))
        bar = fig.colorbar(mappable, cax=cax, orientation="horizontal", extend="both", extendfrac=0.03)
        bar.ax.tick_params(labelsize=9, pad=1)
        cax.set_title(f"depth (m), scale {_number(low)}-{_number(high)} m = 2nd-98th percentile",
                      fontsize=9, loc="left", pad=4)
    visible, occluded = counts
    handles = [Line2D([], [], marker="o", linestyle="", markersize=8, markeredgewidth=0, color="#30a0c0",
                      label=f"visible: {visible:,} (colour = depth)"),
               Line2D([], [], marker="o", linestyle="", markersize=7, markeredgewidth=0, color=OCCLUDED_COLOR,
                      label=f"occluded: {occluded:,} (in the image, behind a surface)")]
    fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(1 - 0.1 / width_in, 1 - 0.4 / total_in),
               fontsize=9, frameon=False, handletextpad=0.3, borderaxespad=0)
