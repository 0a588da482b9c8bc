"""Feature pictures: the first three principal components of DINO features shown as RGB.

This is the first thing every DINO user looks at: object parts and surfaces light up in consistent
colours when the features are good, and show noise when they are not (e.g. random weights, which
is why every picture of a random-weight model says so in its title).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..fileio import atomic_write_bytes
from ..io.ply import write_ply

RANDOM_WEIGHTS_NOTE = "random weights - not real features"


def pca_basis(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, 3 components, low, high) of (N, D) features; low/high are robust 1st/99th percentiles.

    Fitting once and applying to several inputs (all views of a scene, or views and points) keeps
    their colours comparable.
    """
    x = features.float()
    mean = x.mean(0)
    centred = x - mean
    k = min(3, x.shape[1], max(x.shape[0] - 1, 1))
    _, _, v = torch.linalg.svd(centred[:: max(1, x.shape[0] // 20000)], full_matrices=False)
    comps = torch.zeros(x.shape[1], 3)
    comps[:, :k] = v[:k].T
    proj = centred @ comps
    low, high = torch.quantile(proj[:: max(1, proj.shape[0] // 100000)], torch.tensor([0.01, 0.99]), dim=0)
    return mean, comps, low, high


def pca_colors(features: torch.Tensor, basis: tuple[torch.Tensor, ...] | None = None) -> np.ndarray:
    """(N, D) features -> (N, 3) uint8 colours from the first three principal components."""
    mean, comps, low, high = basis if basis is not None else pca_basis(features)
    proj = (features.float() - mean) @ comps
    scaled = ((proj - low) / (high - low).clamp(min=1e-8)).clamp(0, 1)
    return (scaled * 255).round().to(torch.uint8).numpy()


def grid_to_rgb(grid: torch.Tensor, basis: tuple[torch.Tensor, ...] | None = None) -> np.ndarray:
    """(D, h, w) feature grid -> (h, w, 3) uint8 PCA image."""
    d, h, w = grid.shape
    return pca_colors(grid.reshape(d, -1).T, basis).reshape(h, w, 3)


def _save_figure(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def save_patch_pca(path: str | Path, image: np.ndarray, grid: torch.Tensor, title: str,
                   basis: tuple[torch.Tensor, ...] | None = None) -> Path:
    """Side-by-side PNG: the image and its patch features' PCA (nearest-upsampled to the image)."""
    rgb = grid_to_rgb(grid, basis)
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2)
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(rgb, interpolation="nearest", extent=(0, image.shape[1], image.shape[0], 0))
    axes[1].set_title(f"patch features, PCA ({grid.shape[2]}x{grid.shape[1]} patches)")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    return _save_figure(fig, Path(path))


def save_point_pca(ply_path: str | Path, png_path: str | Path, coord: np.ndarray, features: torch.Tensor,
                   seen: torch.Tensor, title: str, basis: tuple[torch.Tensor, ...] | None = None) -> tuple[Path, Path]:
    """PCA-coloured points as PLY (unseen points grey) and a top-down orthographic PNG render."""
    colors = np.full((coord.shape[0], 3), 128, dtype=np.uint8)
    if bool(seen.any()):
        colors[seen.numpy()] = pca_colors(features[seen], basis)
    ply = write_ply(ply_path, coord, colors, seen=seen.numpy().astype(np.uint8))
    order = np.argsort(coord[:, 2])  # draw low points first so the top surface stays visible
    fig = Figure(figsize=(7, 7))
    ax = fig.subplots()
    ax.scatter(coord[order, 0], coord[order, 1], c=colors[order] / 255.0, s=2, linewidths=0)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(f"{title}\n{int(seen.sum())}/{coord.shape[0]} points seen (grey: unseen)", fontsize=10)
    return ply, _save_figure(fig, Path(png_path))


def save_student_vs_teacher(path: str | Path, coord: np.ndarray, teacher: torch.Tensor, student: torch.Tensor,
                            seen: torch.Tensor, cosine: float, title: str) -> Path:
    """Top-down PNG of (N, 3) points: teacher features | student features, in one PCA basis.

    The basis is fitted on the teacher's ``seen`` points and applied to both, so equal colours
    mean similar features; unseen points are grey in the teacher panel (no target) and coloured
    in the student's (it predicts everywhere). ``cosine`` is the panel's similarity label.
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state, safe off the main thread

    from ..fileio import atomic_write

    seen = seen.bool()
    basis = pca_basis(teacher[seen])
    teacher_rgb = np.full((len(coord), 3), 128, np.uint8)
    teacher_rgb[seen.numpy()] = pca_colors(teacher[seen], basis)
    student_rgb = pca_colors(student, basis)
    z = coord[:, 2]
    below = z < z.max() - 0.25  # hide the ceiling so the floor, furniture and walls show from above
    order = np.argsort(z)
    order = order[below[order]] if below.any() else order
    fig = Figure(figsize=(12, 6.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, rgb, name in ((axes[0], teacher_rgb, "teacher: lifted 2D features (grey: unseen)"),
                          (axes[1], student_rgb, f"student: predicted from 3D only (cos {cosine:.3f} on seen)")):
        ax.scatter(coord[order, 0], coord[order, 1], c=rgb[order] / 255.0, s=3, linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    return atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=100))
