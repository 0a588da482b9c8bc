"""Point-cloud transforms of the reference recipe (docs/design.md#training-recipe) that keep point-pixel links intact.

Every transform is a small class called as ``t(sample, rng)`` with a ``numpy.random.Generator``:
all randomness comes from ``rng``, so a sample is a pure function of its seed and training resumes
exactly (the engine seeds each sample from ``(seed, epoch, position)``). Transforms are built from
YAML with :func:`build_transforms` (``[{type: RandomScale, scale: [0.9, 1.1]}, ...]``).

Geometric augmentations move ``coord`` (and ``normal``); they never touch the correspondences
(``pixel_uv`` / ``visible``), which were computed on the raw points and stay valid for them.
Transforms that select points go through :func:`ditr.data.sample.take`, which subsets the
correspondences along with every other per-point array. ``GridSample`` in ``test`` mode returns a
list of fragments; :class:`Compose` applies the remaining transforms to each of them. A
``GridSample`` with ``return_inverse`` may come before another one (the outdoor "pre-grid" of the
test pipeline): the two maps are chained, so every raw point still finds its prediction.

Rotation angles are given in multiples of pi, as in the reference's configuration files.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DitrError
from .sample import Sample, num_points, take

TRANSFORMS: dict[str, type] = {}


def register(cls: type) -> type:
    TRANSFORMS[cls.__name__] = cls
    return cls


def _rotation(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _subset_guard(sample: Sample, name: str) -> None:
    """Subsetting after a full-resolution inverse map was recorded would silently break it."""
    if "inverse" in sample:
        raise ValueError(f"{name} after GridSample(return_inverse=True) would invalidate the inverse map; "
                         "select points before grid sampling")


# ------------------------------------------------------------------------------------------ geometry
@register
class CenterShift:
    """Move the bounding-box centre to the origin in x/y; in z the minimum (``apply_z``) or nothing."""

    def __init__(self, apply_z: bool = True):
        self.apply_z = apply_z

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        coord = sample["coord"]
        lo, hi = coord.min(0), coord.max(0)
        shift = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2] if self.apply_z else 0.0], np.float32)
        sample["coord"] = coord - shift
        return sample


@register
class PointClip:
    """Clamp coordinates into the box ``point_cloud_range`` = [x0, y0, z0, x1, y1, z1] (metres).

    No point is removed, so every raw point is still predicted: a LiDAR return beyond the box lands
    on its face. The box bounds the voxel grid of a far-reaching scan (the reference's
    SemanticKITTI lists clamp to +-35.2 m in x/y and -4..2 m in z, Waymo's to +-75.2 m and -4..2 m).
    """

    def __init__(self, point_cloud_range: Sequence[float]):
        try:
            box = np.asarray(point_cloud_range, np.float64)
        except (TypeError, ValueError):
            box = np.empty(0)
        if box.shape != (6,) or not np.isfinite(box).all():
            raise ValueError(f"point_cloud_range must be 6 numbers [x0, y0, z0, x1, y1, z1], got {point_cloud_range!r}")
        bad = [axis for axis, lo, hi in zip("xyz", box[:3], box[3:]) if lo >= hi]
        if bad:
            raise ValueError(f"point_cloud_range {box.tolist()}: the minimum must lie below the maximum "
                             f"(not so along {', '.join(bad)})")
        self.low, self.high = box[:3].astype(np.float32), box[3:].astype(np.float32)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sample["coord"] = np.clip(sample["coord"], self.low, self.high).astype(np.float32, copy=False)
        return sample


@register
class RandomRotate:
    """Rotate about ``axis`` by an angle uniform in ``angle`` (x pi) with probability ``p``.

    ``center`` is the rotation centre; None uses the bounding-box centre.
    """

    def __init__(self, angle: Sequence[float] = (-1.0, 1.0), axis: str = "z", center: Sequence[float] | None = None,
                 p: float = 0.5):
        if axis not in ("x", "y", "z"):
            raise ValueError(f"axis must be x, y or z, not {axis!r}")
        self.angle, self.axis, self.center, self.p = tuple(angle), axis, center, p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        rot = _rotation(self.axis, rng.uniform(*self.angle) * np.pi).astype(np.float32)
        coord = sample["coord"]
        centre = (np.asarray(self.center, np.float32) if self.center is not None
                  else (coord.min(0) + coord.max(0)) / 2)
        sample["coord"] = (coord - centre) @ rot.T + centre
        if "normal" in sample:
            sample["normal"] = sample["normal"] @ rot.T
        return sample


@register
class RandomScale:
    """Scale by a factor uniform in ``scale`` (one factor, or one per axis if ``anisotropic``)."""

    def __init__(self, scale: Sequence[float] = (0.9, 1.1), anisotropic: bool = False):
        self.scale, self.anisotropic = tuple(scale), anisotropic

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        factor = rng.uniform(*self.scale, size=3 if self.anisotropic else 1).astype(np.float32)
        sample["coord"] = sample["coord"] * factor
        return sample


@register
class RandomFlip:
    """Mirror x and y independently, each with probability ``p`` (normals follow)."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sign = np.where(rng.random(2) < self.p, -1.0, 1.0).astype(np.float32)
        sign = np.array([sign[0], sign[1], 1.0], np.float32)
        sample["coord"] = sample["coord"] * sign
        if "normal" in sample:
            sample["normal"] = sample["normal"] * sign
        return sample


@register
class RandomJitter:
    """Add Gaussian noise (``sigma``) clipped to +-``clip`` to every coordinate."""

    def __init__(self, sigma: float = 0.005, clip: float = 0.02):
        self.sigma, self.clip = sigma, clip

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        noise = np.clip(self.sigma * rng.standard_normal(sample["coord"].shape), -self.clip, self.clip)
        sample["coord"] = sample["coord"] + noise.astype(np.float32)
        return sample


def _box_blur(noise: np.ndarray, axis: int) -> np.ndarray:
    """Mean over 3 neighbours along ``axis`` with zero padding (a separable smoothing pass)."""
    pad = [(0, 0)] * noise.ndim
    pad[axis] = (1, 1)
    padded = np.pad(noise, pad)
    n = noise.shape[axis]
    return (padded.take(range(0, n), axis) + padded.take(range(1, n + 1), axis)
            + padded.take(range(2, n + 2), axis)) / 3.0


def _trilinear(grid: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Sample a (X, Y, Z, C) grid at continuous node coordinates t (N, 3), trilinearly.

    torch's ``grid_sample`` does the interpolation in one vectorised kernel; with
    ``align_corners=True`` node k of an axis of n nodes sits at ``2 k / (n - 1) - 1``.
    """
    scale = (2.0 / (np.array(grid.shape[:3]) - 1)).astype(np.float32)
    volume = torch.from_numpy(np.ascontiguousarray(grid.transpose(3, 2, 1, 0), np.float32))[None]  # (1, C, Z, Y, X)
    where = torch.from_numpy((t * scale - 1).astype(np.float32)).view(1, -1, 1, 1, 3)  # (x, y, z) order
    out = F.grid_sample(volume, where, mode="bilinear", align_corners=True)
    return np.ascontiguousarray(out.view(grid.shape[3], -1).numpy().T)


@register
class ElasticDistortion:
    """Smooth random displacement fields (the Mix3D / reference recipe), with probability ``p``.

    For each ``[granularity, magnitude]`` pair: Gaussian noise on a grid of ``granularity``-metre
    cells, smoothed twice by separable 3-cell box filters, interpolated trilinearly at the points
    and added times ``magnitude``. Coarse cells give large smooth bends, fine cells small wiggles.
    """

    def __init__(self, params: Sequence[Sequence[float]] = ((0.2, 0.4), (0.8, 1.6)), p: float = 0.95):
        self.params = [tuple(map(float, pair)) for pair in params]
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        coord = sample["coord"].astype(np.float64)
        for granularity, magnitude in self.params:
            lo = coord.min(0)
            dims = ((coord.max(0) - lo) // granularity).astype(np.int64) + 3
            noise = rng.standard_normal((*dims, 3))
            for _ in range(2):
                for axis in range(3):
                    noise = _box_blur(noise, axis)
            # grid node k sits at lo + (k - 1) * granularity: one cell of margin on each side
            coord = coord + _trilinear(noise, (coord - lo) / granularity + 1.0) * magnitude
        sample["coord"] = coord.astype(np.float32)
        return sample


# ------------------------------------------------------------------------------------------ colour
@register
class ChromaticAutoContrast:
    """Stretch colours to the full 0-255 range and blend with the original (random blend if None)."""

    def __init__(self, p: float = 0.2, blend_factor: float | None = None):
        self.p, self.blend_factor = p, blend_factor

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if "color" not in sample or rng.random() >= self.p:
            return sample
        color = sample["color"]
        lo, hi = color.min(0, keepdims=True), color.max(0, keepdims=True)
        stretched = (color - lo) * (255.0 / np.maximum(hi - lo, 1e-6))
        blend = rng.random() if self.blend_factor is None else self.blend_factor
        sample["color"] = ((1 - blend) * color + blend * stretched).astype(np.float32)
        return sample


@register
class ChromaticTranslation:
    """Shift all colours by one random offset in +-``ratio`` x 255 (clipped to 0-255)."""

    def __init__(self, p: float = 0.95, ratio: float = 0.05):
        self.p, self.ratio = p, ratio

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if "color" not in sample or rng.random() >= self.p:
            return sample
        shift = (rng.random((1, 3)) - 0.5) * 255 * 2 * self.ratio
        sample["color"] = np.clip(sample["color"] + shift, 0, 255).astype(np.float32)
        return sample


@register
class ChromaticJitter:
    """Per-point Gaussian colour noise with standard deviation ``std`` x 255 (clipped to 0-255)."""

    def __init__(self, p: float = 0.95, std: float = 0.05):
        self.p, self.std = p, std

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if "color" not in sample or rng.random() >= self.p:
            return sample
        noise = rng.standard_normal(sample["color"].shape) * self.std * 255
        sample["color"] = np.clip(sample["color"] + noise, 0, 255).astype(np.float32)
        return sample


@register
class NormalizeColor:
    """Colours 0-255 -> [-1, 1] (``color / 127.5 - 1``, as the reference feeds them)."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if "color" in sample:
            sample["color"] = (sample["color"] / 127.5 - 1.0).astype(np.float32)
        return sample


# ------------------------------------------------------------------------------------------ sampling
@register
class RandomDropout:
    """With probability ``p``, keep a random ``1 - dropout_ratio`` of the points."""

    def __init__(self, dropout_ratio: float = 0.2, p: float = 0.2):
        self.dropout_ratio, self.p = dropout_ratio, p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        _subset_guard(sample, "RandomDropout")
        n = num_points(sample)
        keep = rng.permutation(n)[: int(n * (1 - self.dropout_ratio))]
        return take(sample, keep)


def voxel_groups(coord: np.ndarray, grid_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group points by voxel: (grid_coord, order, starts, counts).

    ``order`` sorts the points by voxel; voxel j holds ``order[starts[j]:starts[j] + counts[j]]``.
    ``grid_coord`` (N, 3) int64 is shifted so that its minimum is 0.
    """
    grid = np.floor(coord.astype(np.float64) / grid_size).astype(np.int64)
    grid -= grid.min(0)
    dims = grid.max(0) + 1
    key = (grid[:, 0] * dims[1] + grid[:, 1]) * dims[2] + grid[:, 2]
    order = np.argsort(key)
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    counts = np.diff(np.r_[starts, len(key)])
    return grid, order, starts, counts


#: Voxels along one axis that the serialization codes hold (16 bits per axis: ~3.3 km at 5 cm voxels).
MAX_GRID_CELLS = 2**16 - 1


def check_grid_extent(grid: np.ndarray, coord: np.ndarray, grid_size: float) -> None:
    """A clean error when a cloud spans more voxels than the serialization codes hold (a stray point
    1,000 km away), naming the extent and the voxel size; before, a traceback deep in the model."""
    if len(grid) == 0:
        return
    top = int(grid.max())
    if top + 1 <= MAX_GRID_CELLS:  # the reference's depth formula needs bit_length(max + 1) <= 16
        return
    extent = np.asarray(coord, np.float64).max(0) - np.asarray(coord, np.float64).min(0)
    axis = "xyz"[int(np.argmax(extent))]
    most = MAX_GRID_CELLS
    raise DitrError(f"the point cloud spans {float(extent.max()):,.1f} m along {axis} ({top + 1:,} voxels of "
                    f"{grid_size:g} m); at most {most:,} voxels ({most * grid_size:,.0f} m at this voxel size) fit "
                    "the model's serialization codes: remove far-away stray points, or "
                    "split the scene")


@register
class GridSample:
    """Voxelise with cells of ``grid_size`` metres and set ``grid_coord``.

    ``train``: ONE RANDOM point per voxel (a fresh choice every time the sample is drawn).
    ``return_inverse`` also stores ``inverse`` (N,): for every input point the row of its voxel's
    representative, which maps voxel predictions back to full resolution.
    ``test``: a list of fragments; fragment k takes the k-th point of every voxel (cycling through
    voxels with fewer points), so each fragment is a complete voxelisation of the scene and the
    fragments together cover every point. Each fragment's ``index`` names its original points.

    After a ``GridSample`` with ``return_inverse`` (a pre-grid that thins a dense LiDAR scan, as the
    reference's outdoor test pipelines do), the inverse maps are chained: a ``train`` step with
    ``return_inverse`` maps every raw point to its representative in the new sample; a ``test``
    step's fragments carry ``represented_by`` (N,) instead, for every raw point the scene row of
    its pre-grid representative, whose votes it takes. A ``train`` step without ``return_inverse``
    would lose the raw points' map and is refused.
    """

    def __init__(self, grid_size: float = 0.02, mode: str = "train", return_inverse: bool = False):
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be train or test, not {mode!r}")
        self.grid_size, self.mode, self.return_inverse = grid_size, mode, return_inverse

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample | list[Sample]:
        earlier = sample.get("inverse")
        if earlier is not None and self.mode == "train" and not self.return_inverse:
            raise ValueError("GridSample without return_inverse after one with it: the raw points' inverse map "
                             "would be lost; set return_inverse: true on both (their maps are chained)")
        grid, order, starts, counts = voxel_groups(sample["coord"], self.grid_size)
        check_grid_extent(grid, sample["coord"], self.grid_size)
        sample = dict(sample, grid_coord=grid)
        if "index" not in sample:
            sample["index"] = np.arange(num_points(sample), dtype=np.int64)
        if self.mode == "test":
            if earlier is not None:  # the fragments vote for the pre-grid's points, which stand for the raw ones
                del sample["inverse"]
                sample["represented_by"] = sample["index"][earlier]
            return [take(sample, order[starts + k % counts]) for k in range(int(counts.max()))]
        chosen = order[starts + rng.integers(0, counts)]
        out = take(sample, chosen)
        if self.return_inverse:
            voxel_of_sorted = np.repeat(np.arange(len(counts)), counts)
            inverse = np.empty(num_points(sample), np.int64)
            inverse[order] = voxel_of_sorted
            out["inverse"] = inverse if earlier is None else inverse[earlier]
        return out


@register
class SphereCrop:
    """Keep the points nearest a centre (a random point in ``random`` mode, the point nearest the
    bounding-box centre in ``center`` mode): at most ``point_max`` of them, or ``sample_rate`` of
    the cloud (``floor(sample_rate * N)``, at least one), whatever its size. Set one of the two;
    with neither, ``point_max`` is 102400. Clouds within ``point_max`` pass unchanged.

    ``sample_rate`` makes every sample, small room or large, a part of its room, never the whole
    (the reference's S3DIS training keeps 0.6, then caps at 204800 points with a second crop);
    ``point_max`` only bounds the memory of a step.
    """

    def __init__(self, point_max: int | None = None, sample_rate: float | None = None, mode: str = "random"):
        if mode not in ("random", "center"):
            raise ValueError(f"mode must be random or center, not {mode!r}")
        if point_max is not None and sample_rate is not None:
            raise ValueError(f"set point_max or sample_rate, not both (got {point_max} and {sample_rate})")
        if sample_rate is not None and not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must lie in (0, 1], not {sample_rate}")
        if point_max is not None and point_max < 1:
            raise ValueError(f"point_max must be at least 1, not {point_max}")
        self.point_max = 102400 if point_max is None else point_max
        self.sample_rate, self.mode = sample_rate, mode

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        n = num_points(sample)
        keep_count = max(1, int(self.sample_rate * n)) if self.sample_rate is not None else self.point_max
        if n <= keep_count:
            return sample
        _subset_guard(sample, "SphereCrop")
        coord = sample["coord"]
        if self.mode == "random":
            centre = coord[rng.integers(n)]
        else:
            box = (coord.min(0) + coord.max(0)) / 2
            centre = coord[np.argmin(((coord - box) ** 2).sum(1))]
        dist = ((coord - centre) ** 2).sum(1)
        keep = np.argpartition(dist, keep_count - 1)[:keep_count]
        return take(sample, np.sort(keep))


# ------------------------------------------------------------------------------------------ images
@register
class ImageFlip:
    """Mirror each view horizontally with probability ``p`` (docs/design.md#image-augmentation).

    The image itself is never touched here: the point's pixel moves to ``u' = W - u`` and the view
    is marked ``view_flipped``, so that the features of the mirrored image (cached by
    ``ditr features --flip``) are looked up at the mirrored pixel.
    """

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if "pixel_uv" not in sample:
            return sample
        nv = sample["pixel_uv"].shape[0]
        flip = rng.random(nv) < self.p
        if not flip.any():
            return sample
        uv = sample["pixel_uv"].copy()
        width = sample["image_sizes"][:, 1].astype(np.float32)
        uv[flip, :, 0] = width[flip, None] - uv[flip, :, 0]
        sample["pixel_uv"] = uv
        sample["view_flipped"] = sample["view_flipped"] ^ flip
        return sample


# ------------------------------------------------------------------------------------------ building
class Compose:
    """Apply transforms in order; after one returns a list (test fragments) the rest map over it."""

    def __init__(self, transforms: Sequence[Callable[[Sample, np.random.Generator], Any]]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample | list[Sample]:
        data: Sample | list[Sample] = sample
        for t in self.transforms:
            data = [t(s, rng) for s in data] if isinstance(data, list) else t(data, rng)
            if isinstance(data, list) and data and isinstance(data[0], list):
                raise ValueError(f"{type(t).__name__} split an already split sample")
        return data

    def __len__(self) -> int:
        return len(self.transforms)


def build_transform(spec: Mapping[str, Any], where: str = "transforms") -> Any:
    """One transform from ``{type: Name, **params}``; unknown names or parameters raise ConfigError."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ConfigError(where, None, f"each transform must be a mapping with a 'type', got {spec!r}")
    name = spec["type"]
    if name not in TRANSFORMS:
        raise ConfigError(where, str(name), f"unknown transform (known: {', '.join(sorted(TRANSFORMS))})")
    cls = TRANSFORMS[name]
    params = {k: v for k, v in spec.items() if k != "type"}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(params) - accepted
    if unknown:
        raise ConfigError(where, f"{name}.{sorted(unknown)[0]}",
                          f"unknown parameter (accepted: {', '.join(sorted(accepted)) or 'none'})")
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(where, name, str(exc)) from None


def build_transforms(specs: Sequence[Mapping[str, Any]] | None, where: str = "transforms") -> Compose:
    """A :class:`Compose` from a YAML list of transform mappings."""
    return Compose([build_transform(s, f"{where}[{i}]") for i, s in enumerate(specs or [])])
