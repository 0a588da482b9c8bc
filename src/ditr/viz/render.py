"""Pictures of per-point labels that scale to millions of points: rasters, not scatter plots.

* :func:`render_topdown`: an orthographic view from above, one pixel per cell of the points' own
  spacing, each pixel showing the highest point in it; a ceiling (a top layer covering most of the
  footprint) is cut away so that the room's contents show.
* :func:`render_view_labels`: a camera's image beside the same image with the labels of the points
  it sees (occlusion tested) painted over it, nearest point on top.
* :func:`render_legend`: class colours, names and point counts.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib.patches
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from ..fileio import atomic_write
from ..projection import ProjectionConfig, estimate_point_spacing, project_scene
from ..scene import Scene
from .palette import class_colors, has_unlabelled, label_colors, legend_handles

#: Longest side of the top-down raster in pixels before it is enlarged for display.
TOPDOWN_PIXELS = 1024
#: A top layer this thick (metres) that covers this share of the footprint is a ceiling.
CEILING_BAND, CEILING_SHARE = 0.3, 0.4
#: Gaps between points up to this many pixels wide are filled in the top-down raster.
HOLE_FILL = 3
#: Largest square (half-width in pixels) a point is drawn as over a view's image.
MAX_SPLAT = 8
#: Views are drawn at most this wide (pixels per panel); smaller ones are enlarged to this width.
VIEW_WIDTH, MIN_VIEW_WIDTH = 960, 480


def _first_per_cell(cell: np.ndarray, priority: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cells, rows): for each distinct cell, the row with the smallest priority (both empty for no rows)."""
    if len(cell) == 0:  # a view that sees no point: nothing to draw
        return cell[:0].astype(np.int64), np.zeros(0, np.int64)
    order = np.lexsort((priority, cell))
    first = np.r_[True, cell[order][1:] != cell[order][:-1]]
    return cell[order][first], order[first]


def _fill_holes(image: np.ndarray, filled: np.ndarray, steps: int) -> np.ndarray:
    """Give empty pixels the colour of a filled 4-neighbour, ``steps`` times (gaps between points)."""
    for _ in range(steps):  # a loop over fill steps, each vectorised over the image
        for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)):
            src_img, src_ok = np.roll(image, shift, axis), np.roll(filled, shift, axis)
            edge = [slice(None), slice(None)]
            edge[axis] = 0 if shift > 0 else -1  # the row / column np.roll wrapped around
            src_ok[tuple(edge)] = False
            take = ~filled & src_ok
            image[take] = src_img[take]
            filled = filled | take
    return image


def _grid_cells(coord: np.ndarray, lo: np.ndarray, size: float) -> tuple[np.ndarray, tuple[int, int]]:
    """(N,) flat ids of the square ``size`` cells of a grid from ``lo`` that the points fall in, grid (w, h)."""
    ij = np.floor((coord[:, :2] - lo) / size).astype(np.int64)
    w, h = (int(v) for v in ij.max(0) + 1)
    return ij[:, 1] * w + ij[:, 0], (w, h)


def ceiling_mask(coord: np.ndarray, cell_size: float) -> np.ndarray | None:
    """(N,) bool: the points of a ceiling, or None where the scene has none.

    A ceiling is the top ``CEILING_BAND`` metres when they cover more than ``CEILING_SHARE`` of the
    grid cells (``cell_size`` wide) that any point falls in, and leave points below: a room seen
    from above shows its ceiling, a street its roofs and tree tops (a small share).
    """
    if len(coord) == 0:
        return None
    cell, _ = _grid_cells(coord, coord[:, :2].min(0), cell_size)
    z = coord[:, 2]
    top = z >= z.max() - CEILING_BAND
    if np.unique(cell[top]).size <= CEILING_SHARE * np.unique(cell).size or top.all():
        return None
    return top


def topdown_raster(coord: np.ndarray, colors: np.ndarray, max_pixels: int = TOPDOWN_PIXELS
                   ) -> tuple[np.ndarray, tuple[float, float, float, float], bool]:
    """(H, W, 3) uint8 raster seen from above (white background), its extent in metres, ceiling cut.

    The pixel is about the points' spacing on their surfaces; gaps of up to ``HOLE_FILL`` pixels
    between points are closed with the neighbours' colour.
    """
    lo, hi = coord[:, :2].min(0), coord[:, :2].max(0)
    extent = np.maximum(hi - lo, 1e-3)
    pixel = max(float(extent.max()) / max_pixels, estimate_point_spacing(torch.from_numpy(coord)))
    cell, (w, h) = _grid_cells(coord, lo, pixel)
    z = coord[:, 2]
    ceiling = ceiling_mask(coord, pixel)
    cut = ceiling is not None
    keep = ~ceiling if ceiling is not None else np.ones(len(coord), bool)
    cells, rows = _first_per_cell(cell[keep], -z[keep])
    image = np.full((h * w, 3), 255, np.uint8)
    image[cells] = colors[keep][rows]
    filled = np.zeros(h * w, bool)
    filled[cells] = True
    image = _fill_holes(image.reshape(h, w, 3), filled.reshape(h, w), HOLE_FILL)
    return image[::-1], (float(lo[0]), float(lo[0] + w * pixel), float(lo[1]),
                                          float(lo[1] + h * pixel)), bool(cut)


def render_topdown(coord: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """PNG of the labels seen from above, with axes in metres and a legend of the classes present."""
    num_classes = len(class_names)
    raster, extent, cut = topdown_raster(coord, label_colors(labels, num_classes))
    width = 9.0
    height = width * (extent[3] - extent[2]) / max(extent[1] - extent[0], 1e-6)
    fig = Figure(figsize=(width + 2.8, min(max(height, 4.0), 14.0) + 0.6), layout="constrained")
    ax = fig.subplots()
    ax.imshow(raster, extent=extent, interpolation="nearest")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title((title + "\n" if title else "") + "from above" + (", ceiling cut away" if cut else ""), fontsize=10)
    present = [int(c) for c in np.unique(labels) if 0 <= c < num_classes]
    fig.legend(handles=legend_handles(present, class_names, unlabelled=has_unlabelled(labels, num_classes)),
               loc="outside right upper", fontsize=10)
    return atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=100))


def _splat(uv: np.ndarray, depth: np.ndarray, colors: np.ndarray, shape: tuple[int, int], radius: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """(flat pixel ids, colours): point i drawn as a square of ``2 radius[i] + 1`` pixels, nearest on top."""
    h, w = shape
    base = np.floor(uv).astype(np.int64)
    cells, rows = [], []
    top = int(radius.max()) if len(radius) else 0
    for du in range(-top, top + 1):  # a loop over the square's offsets, each vectorised over points
        for dv in range(-top, top + 1):
            u, v = base[:, 0] + du, base[:, 1] + dv
            ok = (u >= 0) & (u < w) & (v >= 0) & (v < h) & (radius >= max(abs(du), abs(dv)))
            cells.append(v[ok] * w + u[ok])
            rows.append(np.flatnonzero(ok))
    cell, row = np.concatenate(cells), np.concatenate(rows)
    cells_first, first = _first_per_cell(cell, depth[row])
    return cells_first, colors[row[first]]


def paint_view(image: np.ndarray, uv: np.ndarray, depth: np.ndarray, colors: np.ndarray, spacing: float,
               focal: float, alpha: float = 0.65) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` dimmed, with the points (pixel ``uv``, camera ``depth``) painted in
    ``colors`` (0-255) at ``alpha``, each a square about the point ``spacing`` wide as seen at its
    depth (so surfaces render closed), nearest point on top."""
    h, w = image.shape[:2]
    radius = np.clip(np.ceil(0.6 * spacing * focal / np.maximum(depth, 1e-3)), 1, MAX_SPLAT).astype(np.int64)
    cells, paint = _splat(uv, depth, colors.astype(np.float32), (h, w), radius)
    overlay = (image.astype(np.float32) * 0.45).reshape(-1, 3)
    overlay[cells] = (1 - alpha) * image.reshape(-1, 3)[cells] + alpha * paint
    return overlay.reshape(h, w, 3).round().astype(np.uint8)


def safe_stem(name: str) -> str:
    """``name`` usable as a file name on any system: characters other than letters, digits, ``-_.`` become ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def view_file_names(view_names: Sequence[str]) -> list[str]:
    """``view_<name>.png`` per view, unique: names already starting with "view" are not prefixed twice
    (``view_07`` gives ``view_07.png``), unsafe characters become ``_``, a repeated name gets ``_<index>``."""
    names = []
    for i, name in enumerate(view_names):
        safe = safe_stem(name)
        stem = safe[4:].lstrip("_-") if safe.lower().startswith("view") else safe
        candidate = f"view_{stem or safe or i}.png"
        names.append(candidate if candidate not in names else f"view_{stem or safe}_{i}.png")
    return names


def render_view_labels(scene: Scene, labels: np.ndarray, class_names: Sequence[str], out_dir: str | Path,
                       view_ids: Sequence[int], projection: ProjectionConfig = ProjectionConfig(),
                       alpha: float = 0.65) -> list[Path]:
    """``OUT/view_<name>.png`` per view (:func:`view_file_names`): the image | the labels of the points
    it sees over it, panel titles above and the classes it shows (most points first) named below."""
    if not view_ids:
        return []
    import dataclasses

    sub = dataclasses.replace(scene, views=[scene.views[i] for i in view_ids])
    corr = project_scene(sub, projection)
    colors = label_colors(labels, len(class_names))
    spacing = projection.point_spacing or estimate_point_spacing(torch.from_numpy(scene.coord))
    written = []
    for k, (view, file_name) in enumerate(zip(sub.views, view_file_names([v.name for v in sub.views]))):
        scale = min(VIEW_WIDTH / view.width, max(1.0, MIN_VIEW_WIDTH / view.width))
        w, h = max(1, round(view.width * scale)), max(1, round(view.height * scale))
        image = np.asarray(Image.fromarray(view.read_image()).resize((w, h), Image.BILINEAR))
        vis = corr.visible[k].numpy()
        if not vis.any():
            warnings.warn(f"view {view.name} sees no point of the scene; rendered without labels", stacklevel=2)
        overlay = paint_view(image, corr.uv[k].numpy()[vis] * scale, corr.depth[k].numpy()[vis], colors[vis],
                             spacing, view.intrinsics[0, 0] * scale, alpha)
        gap = max(4, w // 100)
        both = np.concatenate([image, np.full((h, gap, 3), 255, np.uint8), overlay], 1)
        seen = np.bincount(labels[vis][labels[vis] >= 0], minlength=len(class_names))[:len(class_names)]
        path = Path(out_dir) / file_name
        written.append(_save_view_panels(path, both, (w, gap), view.name, seen, class_names,
                                         unlabelled=has_unlabelled(labels[vis], len(class_names))))
    return written


def _save_view_panels(path: Path, both: np.ndarray, widths: tuple[int, int], view_name: str, seen: np.ndarray,
                      class_names: Sequence[str], unlabelled: bool) -> Path:
    """Write the two panels at their pixel size with a title above each and a legend of the classes
    in ``seen`` (points per class in view) below, so the colours can be read without ``legend.png``."""
    dpi, (w, gap) = 100, widths
    h, total_w = both.shape[:2]
    present = [int(c) for c in np.argsort(-seen, kind="stable") if seen[c] > 0]
    ncols = max(1, total_w // 170)
    title_px, legend_px = 30, 22 * -(-(len(present) + unlabelled) // ncols) + 12
    fig = Figure(figsize=(total_w / dpi, (h + title_px + legend_px) / dpi), dpi=dpi)
    full_h = h + title_px + legend_px
    ax = fig.add_axes((0, legend_px / full_h, 1, h / full_h))
    ax.imshow(both, interpolation="nearest")
    ax.axis("off")
    y = 1 - title_px / 2 / full_h
    fig.text(0.5 * w / total_w, y, f"image {view_name}", ha="center", va="center", fontsize=11)
    fig.text((w + gap + 0.5 * w) / total_w, y, "classes of the points this camera sees", ha="center",
             va="center", fontsize=11)
    if present or unlabelled:
        fig.legend(handles=legend_handles(present, class_names, unlabelled), loc="lower left",
                   bbox_to_anchor=(0, 0), ncols=ncols, fontsize=10, frameon=False, borderaxespad=0.3,
                   handlelength=1.2, columnspacing=1.2)
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))


def render_legend(class_names: Sequence[str], counts: Sequence[int], path: str | Path) -> Path:
    """PNG table of every class: colour, id, name, predicted points and their share."""
    palette = class_colors(len(class_names))
    total = max(int(sum(counts)), 1)
    rows = len(class_names)
    fig = Figure(figsize=(5.2, 0.28 * rows + 0.5))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(rows + 0.6, -0.8)
    ax.axis("off")
    ax.text(0.16, -0.3, "class", fontsize=9, weight="bold")
    ax.text(0.97, -0.3, "points (share)", fontsize=9, weight="bold", ha="right")
    for i, (name, count) in enumerate(zip(class_names, counts)):
        ax.add_patch(matplotlib.patches.Rectangle((0.03, i + 0.15), 0.08, 0.7, color=palette[i]))
        style = {"color": "black" if count else "grey"}
        ax.text(0.16, i + 0.5, f"{i:>2}  {name}", fontsize=9, va="center", **style)
        ax.text(0.97, i + 0.5, f"{int(count):,} ({100 * count / total:.1f}%)", fontsize=9, va="center",
                ha="right", **style)
    return atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=100))
