"""Lens distortion removed at import: own captures become pinhole views, as ditr's projection needs.

ditr projects points with the pinhole model (``views.json`` has no distortion coefficients), so a
camera with lens distortion would put off-centre points pixels away from what they are. The COLMAP
and nerfstudio importers therefore resample each distorted image into the image an ideal pinhole
camera at the same place would have taken, and store that camera instead.

Models (normalised image coordinates ``x = (u - cx) / fx``, ``y = (v - cy) / fy``, ``r^2 = x^2 + y^2``):

* radial-tangential (OpenCV; COLMAP's SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV; nerfstudio's
  OPENCV): ``x_d = x a + 2 p1 x y + p2 (r^2 + 2 x^2)``, ``y_d = y a + p1 (r^2 + 2 y^2) + 2 p2 x y``,
  ``a = (1 + k1 r^2 + k2 r^4 + k3 r^6 + ...) / (1 + k4 r^2 + k5 r^4 + k6 r^6)`` (the denominator is
  FULL_OPENCV's rational part; nerfstudio's k4 is a fourth numerator term);
* equidistant fisheye (OpenCV's fisheye; COLMAP's OPENCV_FISHEYE, SIMPLE_RADIAL_FISHEYE,
  RADIAL_FISHEYE, SIMPLE_FISHEYE, FISHEYE; nerfstudio's OPENCV_FISHEYE): ``theta = atan(r)``,
  ``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)``, ``x_d = x theta_d / r``.

The undistorted camera keeps the image size and principal point. Its focal length is the original's,
made longer only where needed so that every pixel of the undistorted image comes from inside the
original (lenses whose edges stretch outwards would otherwise leave black borders); barrel and
fisheye lenses, the usual case, keep their focal length and lose the outermost sliver of their
field of view. Pixels are read with one inverse map per camera (each undistorted pixel's place in
the original image, :func:`undistortion_grid`): bilinear for colour, nearest for depth and label
images, whose values must not be blended. Pixel centres are at ``+0.5``, as everywhere in ditr.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import SceneError
from ..scene import View

#: Iterations of the fixed-point / Newton inversions (each converges to 1e-12 in far fewer for real lenses).
_ITERATIONS = 40


@dataclass(frozen=True)
class LensDistortion:
    """A camera's lens distortion; all-zero coefficients are a pinhole (:attr:`is_pinhole`)."""

    #: Numerator coefficients of r^2, r^4, ... (radial-tangential) or of theta^2, theta^4, ... (fisheye).
    radial: tuple[float, ...] = ()
    tangential: tuple[float, float] = (0.0, 0.0)
    #: Denominator coefficients of r^2, r^4, r^6 (FULL_OPENCV's k4, k5, k6).
    denominator: tuple[float, ...] = ()
    fisheye: bool = False

    @property
    def is_pinhole(self) -> bool:
        return not self.fisheye and not any(self.radial + self.tangential + self.denominator)

    def _series(self, t2: np.ndarray) -> np.ndarray:
        """``1 + c1 t2 + c2 t2^2 + ...`` of the numerator coefficients (t2: r^2, or theta^2 for a fisheye)."""
        return 1 + sum((c * t2 ** (i + 1) for i, c in enumerate(self.radial)), np.zeros_like(t2))

    def _radial_tangential(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(radial factor, tangential x shift, tangential y shift) at ideal coordinates (x, y)."""
        r2 = x * x + y * y
        factor = self._series(r2) / (1 + sum(c * r2 ** (i + 1) for i, c in enumerate(self.denominator)))
        p1, p2 = self.tangential
        return factor, 2 * p1 * x * y + p2 * (r2 + 2 * x * x), p1 * (r2 + 2 * y * y) + 2 * p2 * x * y

    def distort(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distorted normalised coordinates of ideal (pinhole) ones."""
        if self.fisheye:
            r = np.sqrt(x * x + y * y)
            theta = np.arctan(r)
            ratio = np.divide(theta * self._series(theta * theta), r, out=np.ones_like(r), where=r > 1e-12)
            return x * ratio, y * ratio
        factor, dx, dy = self._radial_tangential(x, y)
        return x * factor + dx, y * factor + dy

    def undistort(self, xd: np.ndarray, yd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ideal normalised coordinates of distorted ones (the inverse of :meth:`distort`, iterated)."""
        if self.fisheye:
            rd = np.sqrt(xd * xd + yd * yd)
            theta = rd.copy()
            for _ in range(_ITERATIONS):  # Newton on theta (1 + k1 theta^2 + ...) = rd
                t2 = theta * theta
                slope = 1 + sum((2 * i + 3) * c * t2 ** (i + 1) for i, c in enumerate(self.radial))
                theta = theta - (theta * self._series(t2) - rd) / slope
            ratio = np.divide(np.tan(theta), rd, out=np.ones_like(rd), where=rd > 1e-12)
            return xd * ratio, yd * ratio
        x, y = xd.copy(), yd.copy()
        for _ in range(_ITERATIONS):  # x = (xd - tangential(x)) / radial(x), OpenCV's fixed point
            factor, dx, dy = self._radial_tangential(x, y)
            x, y = (xd - dx) / factor, (yd - dy) / factor
        return x, y


def _to_pixels(k: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return k[0, 0] * x + k[0, 2], k[1, 1] * y + k[1, 2]


def _to_normalised(k: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]


def _border(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres of the outermost rows and columns of a width x height image."""
    u, v = np.arange(width) + 0.5, np.arange(height) + 0.5
    return (np.concatenate([u, u, np.full(height, 0.5), np.full(height, width - 0.5)]),
            np.concatenate([np.full(width, 0.5), np.full(width, height - 0.5), v, v]))


def _inside(k: np.ndarray, lens: LensDistortion, k_new: np.ndarray, width: int, height: int) -> bool:
    """Whether every border pixel of the undistorted image (camera ``k_new``) comes from inside the original."""
    us, vs = _to_pixels(k, *lens.distort(*_to_normalised(k_new, *_border(width, height))))
    return bool(((us >= 0) & (us <= width) & (vs >= 0) & (vs <= height)).all())


def pinhole_camera(k: np.ndarray, lens: LensDistortion, width: int, height: int) -> np.ndarray:
    """The undistorted camera: ``k`` with its focal lengths scaled by the least factor >= 1 for which
    every undistorted pixel comes from inside the original image (see the module doc)."""
    def scaled(s: float) -> np.ndarray:
        out = k.copy()
        out[0, 0], out[1, 1] = k[0, 0] * s, k[1, 1] * s
        return out

    if _inside(k, lens, k, width, height):
        return k.copy()
    low, high = 1.0, 2.0
    while not _inside(k, lens, scaled(high), width, height):
        low, high = high, high * 2
        if high > 64:
            raise ValueError("the lens distortion maps the image border outside the image at every focal length")
    for _ in range(_ITERATIONS):
        middle = (low + high) / 2
        low, high = (low, middle) if _inside(k, lens, scaled(middle), width, height) else (middle, high)
    return scaled(high)


def check_invertible(k: np.ndarray, lens: LensDistortion, width: int, height: int, file: Path | str,
                     where: str) -> None:
    """An error when the distortion folds over inside the image (coefficients that no lens has, e.g. a
    sign typed wrongly): then no pixel has one ideal ray, and resampling would mirror the image edges."""
    u, v = _border(width, height)
    x, y = _to_normalised(k, u, v)
    back = lens.distort(*lens.undistort(x, y))
    error = float(np.hypot(k[0, 0] * (back[0] - x), k[1, 1] * (back[1] - y)).max())
    if not error < 0.01:
        raise SceneError(file, where, f"the lens distortion {lens} cannot be undone at the image border "
                                      f"(round trip off by {error:.3g} px): check the coefficients, or undistort "
                                      "the images with the tool that estimated them")


def undistortion_grid(k: np.ndarray, lens: LensDistortion, k_new: np.ndarray, width: int, height: int
                      ) -> torch.Tensor:
    """(1, H, W, 2) sampling grid of :func:`torch.nn.functional.grid_sample` (``align_corners=False``):
    where each pixel of the undistorted image (camera ``k_new``) lies in the original (camera ``k``)."""
    v, u = np.mgrid[0:height, 0:width] + 0.5
    us, vs = _to_pixels(k, *lens.distort(*_to_normalised(k_new, u, v)))
    grid = np.stack([2 * us / width - 1, 2 * vs / height - 1], axis=-1)
    return torch.from_numpy(grid[None].astype(np.float32))


def resample(array: np.ndarray, grid: torch.Tensor, mode: str) -> np.ndarray:
    """``array`` (H, W) or (H, W, C) read through ``grid`` (``bilinear`` or ``nearest``), in its own dtype."""
    data = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    planes = data[None, None] if data.ndim == 2 else data.permute(2, 0, 1)[None]
    out = F.grid_sample(planes, grid, mode=mode, padding_mode="border", align_corners=False)[0]
    result = (out[0] if array.ndim == 2 else out.permute(1, 2, 0)).numpy()
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        result = np.clip(np.round(result), info.min, info.max)
    return result.astype(array.dtype)


def undistort_views(views: list[View], lenses: list[LensDistortion], folder: Path) -> int:
    """Replace each view with a distorted lens by its undistorted pinhole view; the number replaced.

    Images are resampled into ``folder`` (same format as the original; JPEG at quality 95) and the
    views point at them; depth maps (also at their own resolution) and label images are resampled
    with nearest neighbours. One inverse map is computed per distinct camera.
    """
    grids: dict[tuple, torch.Tensor] = {}

    def grid_of(k: np.ndarray, lens: LensDistortion, k_new: np.ndarray, width: int, height: int) -> torch.Tensor:
        key = (k.tobytes(), lens, k_new.tobytes(), width, height)
        if key not in grids:
            grids[key] = undistortion_grid(k, lens, k_new, width, height)
        return grids[key]

    count = 0
    for i, (view, lens) in enumerate(zip(views, lenses)):
        if lens.is_pinhole:
            continue
        k_new = pinhole_camera(view.intrinsics, lens, view.width, view.height)
        grid = grid_of(view.intrinsics, lens, k_new, view.width, view.height)
        suffix = view.image_path.suffix if view.image_path is not None else ".png"
        path = folder / f"{i:06d}{suffix}"
        Image.fromarray(resample(view.read_image(), grid, "bilinear")).save(path, quality=95)
        changes: dict = {"intrinsics": k_new, "image_path": path, "image": None}
        label = view.read_label()
        if label is not None:
            changes.update(label=resample(label, grid, "nearest"), label_path=None)
        depth = view.read_depth()
        if depth is not None:
            k_depth, width, height = view.depth_camera
            k_depth_new = k_depth @ np.linalg.inv(view.intrinsics) @ k_new  # the same pixel map as the colour
            depth_grid = grid_of(k_depth, lens, k_depth_new, width, height)
            changes.update(depth=resample(depth, depth_grid, "nearest"), depth_path=None)
            if view.depth_intrinsics is not None:
                changes["depth_intrinsics"] = k_depth_new
        views[i] = replace(view, **changes)
        count += 1
    return count
