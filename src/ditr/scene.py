"""The scene format, version 1.2 (docs/design.md#scene-format): points plus posed, calibrated images in one directory.

A scene directory holds per-point ``.npy`` arrays (``coord.npy`` and optional attributes, the layout
that preprocessed datasets already use), an optional ``views.json`` describing the cameras, and an
optional ``meta.json``. :meth:`Scene.load` validates everything that can make a later stage silently
wrong (shapes, dtypes, finite values, invertible poses, image sizes, missing files) and raises a
:class:`~ditr.errors.SceneError` naming the file and field; :meth:`Scene.save` writes atomically.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import SceneError
from .fileio import atomic_directory, atomic_save_npy, atomic_write_json

VIEWS_FORMAT = "ditr.views"
VIEWS_VERSION = 1
#: Minor version of views.json (docs/scene-format.md#versions): minors only add optional fields, so a
#: reader accepts every minor of its major version; 1 added per-point ``pixels``, 2 meta.json's ``acquisition``.
VIEWS_MINOR = 2
#: Directory of the per-view ``pixels`` arrays that :meth:`Scene.save` writes.
PIXELS_DIR = "pixels"
VIEWS_FILE = "views.json"
META_FILE = "meta.json"
COORD_FILE = "coord.npy"
#: What made the points, as ``meta.json``'s ``acquisition.kind`` says (format 1.2; docs/scene-format.md):
#: visibility picks its occlusion rule by it (docs/projection.md). ``unknown`` behaves like no entry.
ACQUISITION_KINDS = ("lidar", "rgbd", "mesh", "mvs", "sfm", "unknown")

#: Label-image value meaning "ignore" (class -1) for 8-bit and 16-bit PNG label images.
LABEL_IGNORE_PNG = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
#: Largest |R R^T - I| entry of a camera pose's rotation part (ScanNet's 6-decimal poses are ~1e-6 off).
POSE_TOLERANCE = 1e-3
#: Image modes (Pillow's) and how :meth:`View.read_image` makes 8-bit RGB of them: 8-bit modes by
#: Pillow's own conversion, 16-bit greyscale by keeping the high byte (Pillow would clip it to white).
IMAGE_MODES_8BIT = ("RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr", "La", "RGBa")
IMAGE_MODES_16BIT = ("I;16", "I;16B", "I;16L", "I")
#: Depth images: single-channel 16-bit (``I`` is how some Pillow versions open a 16-bit PNG) or 32-bit float.
DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
#: Label images: single-channel 8-bit (255 = ignore) or 16-bit (65535 = ignore) class ids.
LABEL_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")


class ImageFormatError(ValueError):
    """A file that decodes but holds the wrong kind of image (8-bit depth, colour labels, ...)."""


def _attribute_kind(name: str) -> str | None:
    """Which validation rule a ``<name>.npy`` file follows, or None if it is not a point attribute."""
    if name in ("color", "normal", "strength", "instance"):
        return name
    if name.startswith("segment"):
        return "segment"
    return None


def _validate_attribute(name: str, array: np.ndarray, n: int, file: Path) -> np.ndarray:
    """Check one per-point attribute against the format; returns it in its canonical dtype."""
    kind = _attribute_kind(name)
    if array.shape[:1] != (n,):
        rows = array.shape[0] if array.ndim else 0
        raise SceneError(file, name, f"has {rows} rows, expected {n} (one per point in {COORD_FILE})")
    if kind == "color":
        if array.shape != (n, 3):
            raise SceneError(file, name, f"shape {array.shape}, expected ({n}, 3)")
        if array.dtype != np.uint8:
            raise SceneError(file, name, f"dtype {array.dtype}, expected uint8 (0-255 RGB)")
        return array
    if kind in ("normal", "strength"):
        if kind == "normal" and array.shape != (n, 3):
            raise SceneError(file, name, f"shape {array.shape}, expected ({n}, 3)")
        if kind == "strength" and array.shape not in ((n,), (n, 1)):
            raise SceneError(file, name, f"shape {array.shape}, expected ({n},) or ({n}, 1)")
        if not np.issubdtype(array.dtype, np.floating):
            raise SceneError(file, name, f"dtype {array.dtype}, expected float32")
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).any(axis=-1).sum()) if array.ndim > 1 else int((~np.isfinite(array)).sum())
            raise SceneError(file, name, f"{bad} rows contain NaN or infinite values")
        return array
    # segment* / instance: integer ids, -1 = ignore
    if array.shape != (n,):
        raise SceneError(file, name, f"shape {array.shape}, expected ({n},)")
    if not np.issubdtype(array.dtype, np.integer):
        raise SceneError(file, name, f"dtype {array.dtype}, expected an integer type (-1 = ignore)")
    if array.size and array.min() < -1:
        raise SceneError(file, name, f"contains {int(array.min())}; ids must be >= 0 or -1 (ignore)")
    return array.astype(np.int64, copy=False)


def _validate_coord(coord: np.ndarray, file: Path | str, name: str) -> np.ndarray:
    """Point positions: float (N, 3), N > 0, all finite; returned as float32."""
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise SceneError(file, name, f"shape {coord.shape}, expected (N, 3)")
    if not np.issubdtype(coord.dtype, np.floating):
        raise SceneError(file, name, f"dtype {coord.dtype}, expected float32")
    if coord.shape[0] == 0:
        raise SceneError(file, name, "the scene has no points")
    coord = coord.astype(np.float32, copy=False)
    finite = np.isfinite(coord).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise SceneError(file, name,
                         f"{int((~finite).sum())} points have NaN or infinite coordinates (first: row {first})")
    return coord


def _load_npy(file: Path, name: str) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for damaged files
        raise SceneError(file, name, f"cannot be read as a .npy array ({exc})") from None


def finite_numbers(value: Any, shape: tuple[int, ...], file: Path | str, field_name: str) -> np.ndarray:
    """``value`` as a float64 array of exactly ``shape`` with finite entries, else a SceneError
    naming the file and field (what every matrix, pose or intrinsics read from a file must pass)."""
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneError(file, field_name, f"must be numbers of shape {'x'.join(map(str, shape))}, "
                                           f"got {value!r}") from None
    if m.shape != shape:
        raise SceneError(file, field_name, f"shape {list(m.shape)}, expected {'x'.join(map(str, shape))}")
    if not np.isfinite(m).all():
        raise SceneError(file, field_name, "contains NaN or infinite values")
    return m


def _check_intrinsics(k: np.ndarray, file: Path, field_name: str) -> None:
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise SceneError(file, field_name, f"focal lengths must be positive (fx={k[0, 0]}, fy={k[1, 1]})")
    if not np.allclose(k[2], [0.0, 0.0, 1.0]):
        raise SceneError(file, field_name, f"last row must be [0, 0, 1], got {k[2].tolist()}")


def check_rigid_pose(t: np.ndarray, file: Path | str, field_name: str) -> None:
    """A camera pose is rigid: last row ``[0, 0, 0, 1]``, rotation part orthonormal within
    :data:`POSE_TOLERANCE` and det +1. Scaled, sheared or mirrored poses are a SceneError naming
    ``file`` and ``field_name`` (they would project every point to the wrong pixel, silently)."""
    if not np.allclose(t[3], [0.0, 0.0, 0.0, 1.0]):
        raise SceneError(file, field_name, f"last row must be [0, 0, 0, 1], got {t[3].tolist()}")
    r = t[:3, :3]
    det = float(np.linalg.det(r))
    if not math.isfinite(det) or abs(det) < 1e-9 or np.linalg.cond(r) > 1e8:
        raise SceneError(file, field_name, f"is not invertible (det of the rotation part = {det:.3g})")
    error = float(np.abs(r @ r.T - np.eye(3)).max())
    if error > POSE_TOLERANCE:
        scales = np.linalg.norm(r, axis=0)
        raise SceneError(file, field_name, f"is not rigid: its rotation part is not orthonormal (|R R^T - I| = "
                                           f"{error:.3g}, column lengths {np.round(scales, 4).tolist()}): a camera "
                                           "pose has no scale or shear")
    if det < 0:
        raise SceneError(file, field_name, "is mirrored (det of the rotation part = -1): a handedness mix-up, e.g. "
                                           "one axis flipped between the OpenGL and OpenCV conventions")



def check_acquisition(entry: Any, file: Path | str) -> None:
    """``meta.json``'s ``acquisition``: ``{"kind": one of ACQUISITION_KINDS}`` and, for a LiDAR scan,
    optionally ``"sensor_to_scene"`` (the sensor's rigid 4x4 pose; default: the scene frame is the
    sensor's). A misspelt kind is an error rather than "unknown", since it would silently change which
    occlusion rule runs."""
    if not isinstance(entry, dict) or "kind" not in entry:
        raise SceneError(file, "acquisition", f'must be an object {{"kind": ...}}, got {entry!r}')
    if entry["kind"] not in ACQUISITION_KINDS:
        raise SceneError(file, "acquisition.kind", f"must be one of {', '.join(ACQUISITION_KINDS)}, got "
                                                   f"{entry['kind']!r}")
    if entry.get("sensor_to_scene") is not None:
        pose = finite_numbers(entry["sensor_to_scene"], (4, 4), file, "acquisition.sensor_to_scene")
        check_rigid_pose(pose, file, "acquisition.sensor_to_scene")


def _positive_int(value: Any, file: Path, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SceneError(file, field_name, f"must be a positive integer, got {value!r}")
    return value


def check_pixels(array: np.ndarray, n: int, width: int, height: int, file: Path | str, field_name: str
                 ) -> np.ndarray:
    """A view's per-point pixels (docs/scene-format.md#per-point-pixels) as float32 (n, 2), else a
    SceneError naming ``file`` and ``field_name``: one row per point, each row a pixel inside the
    ``width`` x ``height`` image or NaN, NaN (the point is not projected into the view). A row with
    one NaN, an infinite value or a pixel outside the image is an error: the projection would use it
    as it is, so a wrong array must not load."""
    if array.ndim != 2 or array.shape[1:] != (2,):
        raise SceneError(file, field_name, f"shape {array.shape}, expected ({n}, 2): one (u, v) per point")
    if array.shape[0] != n:
        raise SceneError(file, field_name, f"has {array.shape[0]} rows, expected {n} (one per point in {COORD_FILE})")
    if not np.issubdtype(array.dtype, np.floating):
        raise SceneError(file, field_name, f"dtype {array.dtype}, expected float32 (NaN = not projected)")
    pixels = array.astype(np.float32, copy=False)
    missing = np.isnan(pixels)
    half = missing[:, 0] != missing[:, 1]
    if half.any():
        first = int(np.flatnonzero(half)[0])
        raise SceneError(file, field_name, f"{int(half.sum())} rows have one NaN coordinate (first: row {first}); "
                                           "a point without a pixel is NaN, NaN")
    infinite = np.isinf(pixels).any(axis=1)
    if infinite.any():
        first = int(np.flatnonzero(infinite)[0])
        raise SceneError(file, field_name, f"{int(infinite.sum())} rows are infinite (first: row {first})")
    u, v = pixels[:, 0], pixels[:, 1]
    with np.errstate(invalid="ignore"):
        outside = ~missing[:, 0] & ((u < 0) | (u >= width) | (v < 0) | (v >= height))
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise SceneError(file, field_name, f"{int(outside.sum())} rows lie outside the {width}x{height} image "
                                           f"(first: row {first} at ({u[first]:g}, {v[first]:g})); a point the view "
                                           "does not see is NaN, NaN")
    return pixels


def read_label_image(path: Path) -> np.ndarray:
    """Read a per-pixel class-id image (PNG: 255 / 65535 = ignore; ``.npy``: -1 = ignore) as int64."""
    if path.suffix == ".npy":
        raw = np.load(path, allow_pickle=False)
        if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
            raise ImageFormatError(f"a label array is (H, W) integers, got {raw.dtype} {raw.shape}")
        return raw.astype(np.int64)
    with Image.open(path) as im:
        mode = im.mode
        if mode not in LABEL_MODES:
            raise ImageFormatError(f"a label image is single-channel 8- or 16-bit class ids, got mode {mode}")
        raw = np.asarray(im)
    ignore = 255 if mode in ("L", "P") else 65535  # mode I: a 16-bit PNG as older Pillow versions open it
    labels = raw.astype(np.int64)
    labels[raw == ignore] = -1
    return labels


def write_label_image(path: Path, labels: np.ndarray) -> None:
    """Write class ids (-1 = ignore) as a 16-bit PNG with 65535 = ignore."""
    out = np.where(labels < 0, 65535, labels).astype(np.uint16)
    Image.fromarray(out).save(path)


def read_depth_image(path: Path, depth_scale: float) -> np.ndarray:
    """Read a depth map (uint16 PNG or ``.npy``) and return metres as float32; 0 marks no depth.

    An 8-bit (or colour) image is refused: read in millimetres every depth would be under 0.26 m.
    """
    if path.suffix == ".npy":
        raw = np.load(path, allow_pickle=False)
        if raw.ndim != 2 or not (np.issubdtype(raw.dtype, np.floating) or np.issubdtype(raw.dtype, np.integer)):
            raise ImageFormatError(f"a depth array is (H, W) numbers, got {raw.dtype} {raw.shape}")
    else:
        with Image.open(path) as im:
            _check_depth_mode(im.mode)
            raw = np.asarray(im)
    depth = raw.astype(np.float32) / float(depth_scale)
    depth[~np.isfinite(depth)] = 0.0
    return depth


def _check_depth_mode(mode: str) -> None:
    if mode in DEPTH_MODES:
        return
    if mode in ("L", "P", "1", "LA", "PA"):
        raise ImageFormatError(f"is an 8-bit image (mode {mode}); depth maps are 16-bit PNGs in units of "
                               "1/depth_scale metres (read as millimetres, 8 bits would put every depth under "
                               "0.26 m): write it as uint16")
    raise ImageFormatError(f"has mode {mode}; depth maps are single-channel 16-bit PNGs (uint16) or .npy arrays")


def image_to_rgb(im: Image.Image) -> np.ndarray:
    """8-bit RGB (H, W, 3) of a Pillow image: 16-bit greyscale keeps its high byte (Pillow's own
    conversion clips it, making it nearly all white), 8-bit modes convert as Pillow does."""
    if im.mode in IMAGE_MODES_16BIT:
        raw = np.asarray(im)
        if raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise ImageFormatError(f"mode {im.mode} with values outside 0..65535: not a 16-bit image")
        grey = np.round(raw.astype(np.float32) / 257.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode not in IMAGE_MODES_8BIT:
        raise ImageFormatError(f"unsupported image mode {im.mode} (expected 8-bit RGB / greyscale or 16-bit "
                               "greyscale)")
    return np.asarray(im.convert("RGB"))


def write_depth_image(path: Path, depth_m: np.ndarray, depth_scale: float = 1000.0) -> None:
    """Write metric depth as a uint16 PNG in units of ``1/depth_scale`` metres (0 = no depth)."""
    units = np.nan_to_num(depth_m * depth_scale, nan=0.0, posinf=0.0, neginf=0.0)
    units[(units < 0) | (units > 65535)] = 0
    Image.fromarray(np.round(units).astype(np.uint16)).save(path)


@dataclass
class View:
    """One calibrated, posed camera image of a scene (OpenCV convention: x right, y down, z forward).

    Image, depth and label are either files (``*_path``) or in-memory arrays (``image``, ``depth``,
    ``label``) that :meth:`Scene.save` writes out; the ``read_*`` methods return whichever is set.
    """

    name: str
    width: int
    height: int
    intrinsics: np.ndarray
    cam_to_world: np.ndarray
    image_path: Path | None = None
    depth_path: Path | None = None
    depth_scale: float = 1000.0
    depth_intrinsics: np.ndarray | None = None
    depth_width: int | None = None
    depth_height: int | None = None
    label_path: Path | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    depth: np.ndarray | None = field(default=None, repr=False)
    label: np.ndarray | None = field(default=None, repr=False)
    #: (N, 2) float32 pixel (u, v) of every point of the scene in this image as the dataset itself
    #: computed it (lens distortion, rolling shutter), NaN = not projected; None: the pinhole model.
    pixels: np.ndarray | None = field(default=None, repr=False)

    @property
    def world_to_cam(self) -> np.ndarray:
        return np.linalg.inv(self.cam_to_world)

    @property
    def has_depth(self) -> bool:
        return self.depth is not None or self.depth_path is not None

    @property
    def has_label(self) -> bool:
        return self.label is not None or self.label_path is not None

    @property
    def depth_camera(self) -> tuple[np.ndarray, int, int]:
        """Intrinsics, width and height of the depth map (the colour camera's unless declared)."""
        k = self.depth_intrinsics if self.depth_intrinsics is not None else self.intrinsics
        return k, self.depth_width or self.width, self.depth_height or self.height

    def read_image(self) -> np.ndarray:
        """The RGB image as uint8 (H, W, 3); its size is checked against ``width`` x ``height``."""
        if self.image is not None:
            return self.image
        if self.image_path is None:
            raise SceneError(VIEWS_FILE, f"views[{self.name}].image", "no image file or array")
        try:
            with Image.open(self.image_path) as im:
                rgb = image_to_rgb(im)
        except ImageFormatError as exc:
            raise SceneError(self.image_path, f"views[{self.name}].image", str(exc)) from None
        except Exception as exc:  # PIL raises several types for damaged files
            raise SceneError(self.image_path, f"views[{self.name}].image", f"cannot be decoded ({exc})") from None
        if rgb.shape[:2] != (self.height, self.width):
            raise SceneError(self.image_path, f"views[{self.name}].image",
                             f"is {rgb.shape[1]}x{rgb.shape[0]}, views.json declares {self.width}x{self.height}")
        return rgb

    def read_depth(self) -> np.ndarray | None:
        """Metric depth (float32, metres, 0 = missing) at the depth camera's resolution, or None."""
        if self.depth is not None:
            return self.depth
        if self.depth_path is None:
            return None
        try:
            depth = read_depth_image(self.depth_path, self.depth_scale)
        except ImageFormatError as exc:
            raise SceneError(self.depth_path, f"views[{self.name}].depth", str(exc)) from None
        except Exception as exc:
            raise SceneError(self.depth_path, f"views[{self.name}].depth", f"cannot be decoded ({exc})") from None
        _, w, h = self.depth_camera
        if depth.shape != (h, w):
            raise SceneError(self.depth_path, f"views[{self.name}].depth",
                             f"is {depth.shape[1]}x{depth.shape[0]}, expected {w}x{h}")
        return depth

    def read_label(self) -> np.ndarray | None:
        """Per-pixel class ids (int64, -1 = ignore) or None."""
        if self.label is not None:
            return self.label
        if self.label_path is None:
            return None
        try:
            return read_label_image(self.label_path)
        except ImageFormatError as exc:
            raise SceneError(self.label_path, f"views[{self.name}].label", str(exc)) from None
        except Exception as exc:
            raise SceneError(self.label_path, f"views[{self.name}].label", f"cannot be decoded ({exc})") from None


@dataclass
class Scene:
    """Points with per-point attributes and the views that saw them."""

    coord: np.ndarray
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    views: list[View] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def num_points(self) -> int:
        return int(self.coord.shape[0])

    @property
    def name(self) -> str:
        return self.meta.get("name") or (self.path.name if self.path else "scene")

    def segment(self, name: str | None = None) -> np.ndarray | None:
        """Per-point class ids: ``name`` or the meta's ``segment`` key, else ``segment`` / the only ``segment*``."""
        name = name or self.meta.get("segment")
        if name:
            return self.attributes.get(name)
        if "segment" in self.attributes:
            return self.attributes["segment"]
        segs = sorted(k for k in self.attributes if k.startswith("segment"))
        return self.attributes[segs[0]] if segs else None

    @property
    def class_names(self) -> list[str] | None:
        return self.meta.get("class_names")

    @property
    def acquisition(self) -> str | None:
        """What made the points (one of :data:`ACQUISITION_KINDS`), None where ``meta.json`` does not say."""
        entry = self.meta.get("acquisition")
        return entry.get("kind") if isinstance(entry, dict) else None

    @property
    def sensor_to_scene(self) -> np.ndarray | None:
        """The 4x4 pose of the LiDAR that scanned the points, where ``meta.json`` gives one."""
        entry = self.meta.get("acquisition")
        pose = entry.get("sensor_to_scene") if isinstance(entry, dict) else None
        return None if pose is None else np.asarray(pose, dtype=np.float64)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path, *, check_images: bool = True, num_classes: int | None = None,
             segment: str | None = None, allow_external_files: bool = False) -> Scene:
        """Load and validate a scene directory.

        ``check_images`` also reads every image, depth and label file's header (size and mode: a
        few ms per hundred views). ``num_classes`` checks that the label array (``segment``, else
        the scene's own choice, see :meth:`segment`) holds ids in ``0 .. num_classes - 1`` or -1.
        Files named in ``views.json`` must lie inside the scene directory (no ``..``, no absolute
        path) unless ``allow_external_files``: for scenes that share an image folder on purpose.
        Symbolic links inside the scene directory are followed (a user made them, not the data).
        """
        path = Path(path)
        if not path.is_dir():
            raise SceneError(path, None, "scene directory does not exist")
        coord_file = path / COORD_FILE
        if not coord_file.is_file():
            raise SceneError(coord_file, "coord", "missing: every scene needs coord.npy (float32, N x 3, metres)")
        coord = _validate_coord(_load_npy(coord_file, "coord"), coord_file, "coord")
        n = coord.shape[0]
        attributes = {}
        for file in sorted(path.glob("*.npy")):
            name = file.stem
            if name == "coord" or _attribute_kind(name) is None:
                continue
            attributes[name] = _validate_attribute(name, _load_npy(file, name), n, file)
        meta = cls._load_meta(path / META_FILE)
        views = (cls._load_views(path, check_images, allow_external_files, num_points=n)
                 if (path / VIEWS_FILE).exists() else [])
        scene = cls(coord=coord, attributes=attributes, views=views, meta=meta, path=path)
        if num_classes is not None:
            scene.check_labels(num_classes, segment)
        return scene

    @classmethod
    def from_arrays(cls, points: Any, colors: Any = None, normals: Any = None, *, images: Sequence[Any] = (),
                    intrinsics: Any = None, poses: Any = None, depths: Sequence[Any] | None = None,
                    segment: Any = None, name: str = "scene") -> Scene:
        """A scene built from arrays in memory, checked as :meth:`load` checks a directory; no file is written.

        ``points`` (N, 3) metres; ``colors`` (N, 3) uint8 RGB, or floats in [0, 1]; ``normals`` (N, 3);
        ``segment`` (N,) class ids (-1 = none). ``images``: V RGB uint8 (H, W, 3) arrays, seen through
        ``intrinsics`` (one 3x3 matrix for all, or V of them, pixels) from ``poses`` (V 4x4
        camera-to-world matrices, OpenCV axes: x right, y down, z forward); ``depths``: V (H, W)
        depth maps in metres (0 = no depth), optional. An error names the argument (``images[2]``).
        """
        where = "Scene.from_arrays"
        coord = _validate_coord(np.asarray(points), where, "points")
        n = coord.shape[0]
        attributes: dict[str, np.ndarray] = {}
        arrays = {"color": ("colors", colors), "normal": ("normals", normals), "segment": ("segment", segment)}
        for key, (argument, value) in arrays.items():
            if value is None:
                continue
            array = np.asarray(value)
            if key == "color" and np.issubdtype(array.dtype, np.floating):
                if array.size and not (np.isfinite(array).all() and 0 <= array.min() and array.max() <= 1):
                    raise SceneError(where, argument, "float colours must lie in [0, 1] (or give uint8 0-255)")
                array = np.round(array * 255).astype(np.uint8)
            try:
                attributes[key] = _validate_attribute(key, array, n, Path(where))
            except SceneError as exc:  # the rule's words, the argument's name
                raise SceneError(where, argument, exc.problem) from None
        views = _views_from_arrays(images, intrinsics, poses, depths, where)
        meta = {"name": name} | ({"segment": "segment"} if segment is not None else {})
        return cls(coord=coord, attributes=attributes, views=views, meta=meta)

    def check_labels(self, num_classes: int, segment: str | None = None) -> None:
        """The label array (``segment``, else the scene's choice) holds ids ``0 .. num_classes - 1``
        or -1 (ignore); a SceneError naming the file otherwise. A scene without that array passes:
        whether labels are required is the caller's decision."""
        key = segment or self.meta.get("segment")
        labels = self.segment(segment)
        if labels is None or not labels.size:
            return
        top = int(labels.max())
        if top >= num_classes:
            name = key or next((k for k, v in self.attributes.items() if v is labels), "segment")
            file = (self.path / f"{name}.npy") if self.path else Path(f"{name}.npy")
            count = int((labels >= num_classes).sum())
            raise SceneError(file, name, f"holds class id {top} ({count} points >= {num_classes}) but the run has "
                                         f"{num_classes} classes (ids 0..{num_classes - 1}, -1 = ignore): "
                                         "another label set than dataset.segment / dataset.num_classes say?")

    @staticmethod
    def _load_meta(file: Path) -> dict[str, Any]:
        if not file.exists():
            return {}
        try:
            meta = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SceneError(file, None, f"is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise SceneError(file, None, "must hold a JSON object")
        names = meta.get("class_names")
        if names is not None and not (isinstance(names, list) and all(isinstance(s, str) for s in names)):
            raise SceneError(file, "class_names", "must be a list of strings")
        if "ignore_index" in meta and not isinstance(meta["ignore_index"], int):
            raise SceneError(file, "ignore_index", "must be an integer")
        if "acquisition" in meta:
            check_acquisition(meta["acquisition"], file)
        return meta

    @staticmethod
    def _load_views(path: Path, check_images: bool, allow_external_files: bool = False, *,
                    num_points: int) -> list[View]:
        file = path / VIEWS_FILE
        try:
            doc = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SceneError(file, None, f"is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != VIEWS_FORMAT:
            raise SceneError(file, "format", f'must be "{VIEWS_FORMAT}"')
        if doc.get("version") != VIEWS_VERSION:
            raise SceneError(file, "version",
                             f"unsupported version {doc.get('version')!r}; this ditr reads version {VIEWS_VERSION}")
        minor = doc.get("minor", 0)
        if isinstance(minor, bool) or not isinstance(minor, int) or minor < 0:
            raise SceneError(file, "minor", f"must be a non-negative integer, got {minor!r}")
        entries = doc.get("views")
        if not isinstance(entries, list):
            raise SceneError(file, "views", "must be a list")
        views, seen = [], set()
        for i, entry in enumerate(entries):
            views.append(_parse_view(entry, i, path, file, check_images, allow_external_files, num_points=num_points))
            if views[-1].name in seen:
                raise SceneError(file, f"views[{i}].name", f"duplicate view name {views[-1].name!r}")
            seen.add(views[-1].name)
        return views

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path, *, image_format: str = "jpg") -> Path:
        """Write the scene directory atomically (a reader sees the old scene or the new, never a mix).

        In-memory images are encoded as ``image_format`` (``jpg`` or ``png``); images that live in
        files are copied unchanged; depth is written as uint16 PNG (mm by default), labels as 16-bit PNG.
        """
        path = Path(path)
        n = self.num_points
        for name, array in self.attributes.items():
            _validate_attribute(name, np.asarray(array), n, path / f"{name}.npy")
        names: set[str] = set()
        for i, view in enumerate(self.views):  # what load would refuse is not written
            where = f"views[{i}] ({view.name})"
            if view.name in names:
                raise SceneError(path / VIEWS_FILE, f"{where}.name", f"duplicate view name {view.name!r}")
            names.add(view.name)
            pose = finite_numbers(view.cam_to_world, (4, 4), path / VIEWS_FILE, f"{where}.cam_to_world")
            check_rigid_pose(pose, path / VIEWS_FILE, f"{where}.cam_to_world")
            if view.pixels is not None:
                check_pixels(np.asarray(view.pixels), n, view.width, view.height, path / VIEWS_FILE, f"{where}.pixels")
        if "acquisition" in self.meta:
            check_acquisition(self.meta["acquisition"], path / META_FILE)
        with atomic_directory(path) as tmp:
            atomic_save_npy(tmp / COORD_FILE, np.ascontiguousarray(self.coord, dtype=np.float32))
            for name, array in self.attributes.items():
                atomic_save_npy(tmp / f"{name}.npy", np.asarray(array))
            if self.meta:
                atomic_write_json(tmp / META_FILE, self.meta)
            if self.views:
                stems: set[str] = set()
                entries = [_write_view(v, tmp, image_format, stems) for v in self.views]
                atomic_write_json(tmp / VIEWS_FILE,
                                  {"format": VIEWS_FORMAT, "version": VIEWS_VERSION, "minor": VIEWS_MINOR,
                                   "views": entries})
        self.path = path
        return path


def _parse_view(entry: Any, i: int, root: Path, file: Path, check_images: bool,
                allow_external_files: bool = False, *, num_points: int) -> View:
    where = f"views[{i}]"
    if not isinstance(entry, dict):
        raise SceneError(file, where, "must be a JSON object")
    for key in ("name", "image", "width", "height", "intrinsics", "cam_to_world"):
        if key not in entry:
            raise SceneError(file, f"{where}.{key}", "missing")
    name = entry["name"]
    if not isinstance(name, str) or not name:
        raise SceneError(file, f"{where}.name", "must be a non-empty string")
    where = f"views[{i}] ({name})"
    width = _positive_int(entry["width"], file, f"{where}.width")
    height = _positive_int(entry["height"], file, f"{where}.height")
    k = finite_numbers(entry["intrinsics"], (3, 3), file, f"{where}.intrinsics")
    _check_intrinsics(k, file, f"{where}.intrinsics")
    pose = finite_numbers(entry["cam_to_world"], (4, 4), file, f"{where}.cam_to_world")
    check_rigid_pose(pose, file, f"{where}.cam_to_world")

    def existing(key: str) -> Path | None:
        rel = entry.get(key)
        if rel is None:
            return None
        if not isinstance(rel, str) or not rel:
            raise SceneError(file, f"{where}.{key}", "must be a path string relative to the scene directory")
        if not allow_external_files and _leaves_directory(rel):
            raise SceneError(file, f"{where}.{key}", f"{rel!r} points outside the scene directory; views.json "
                                                     "names files inside it (Scene.load(..., allow_external_files="
                                                     "True) reads shared image folders on purpose)")
        p = root / rel
        if not p.is_file():
            raise SceneError(file, f"{where}.{key}", f"file not found: {p}")
        return p

    view = View(name=name, width=width, height=height, intrinsics=k, cam_to_world=pose,
                image_path=existing("image"), depth_path=existing("depth"), label_path=existing("label"))
    pixels_path = existing("pixels")
    if pixels_path is not None:
        if pixels_path.suffix != ".npy":
            raise SceneError(file, f"{where}.pixels", f"{entry['pixels']!r}: per-point pixels are a .npy array")
        raw = _load_npy(pixels_path, f"{where}.pixels")
        view.pixels = check_pixels(raw, num_points, width, height, pixels_path, f"{where}.pixels")
    if view.depth_path is not None:
        scale = entry.get("depth_scale", 1000.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise SceneError(file, f"{where}.depth_scale",
                             f"must be a positive number (units per metre), got {scale!r}")
        view.depth_scale = float(scale)
        if "depth_intrinsics" in entry:
            view.depth_intrinsics = finite_numbers(entry["depth_intrinsics"], (3, 3), file, f"{where}.depth_intrinsics")
            _check_intrinsics(view.depth_intrinsics, file, f"{where}.depth_intrinsics")
            view.depth_width = _positive_int(entry.get("depth_width"), file, f"{where}.depth_width")
            view.depth_height = _positive_int(entry.get("depth_height"), file, f"{where}.depth_height")
    if check_images:
        assert view.image_path is not None  # "image" is a required key
        _check_size(view.image_path, (width, height), file, f"{where}.image", "image")
        if view.depth_path is not None:
            _, dw, dh = view.depth_camera
            _check_size(view.depth_path, (dw, dh), file, f"{where}.depth", "depth")
        if view.label_path is not None:
            _check_size(view.label_path, (width, height), file, f"{where}.label", "label")
    return view


def _leaves_directory(rel: str) -> bool:
    """Whether a views.json path is absolute or climbs out with ``..`` (either separator, any drive)."""
    parts = rel.replace("\\", "/").split("/")
    return rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":") or ".." in parts


def _image_header(p: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and the Pillow mode (for ``.npy``: the dtype's name) of a file, from its header."""
    if p.suffix == ".npy":
        array = np.load(p, mmap_mode="r", allow_pickle=False)
        if array.ndim != 2:
            raise ValueError(f"an image array is (H, W), got shape {array.shape}")
        return (int(array.shape[1]), int(array.shape[0])), array.dtype.name
    with Image.open(p) as im:  # reads the header only
        return im.size, im.mode


def _check_mode(mode: str, kind: str, npy: bool) -> None:
    if npy:
        if kind == "label" and not mode.startswith(("int", "uint")):
            raise ValueError(f"a label array holds integer class ids, got {mode}")
        if kind != "label" and not mode.startswith(("int", "uint", "float")):
            raise ValueError(f"a depth array holds numbers, got {mode}")
        if kind == "image":
            raise ValueError("images are image files (JPEG, PNG, ...), not .npy arrays")
        return
    if kind == "image" and mode not in IMAGE_MODES_8BIT + IMAGE_MODES_16BIT:
        raise ValueError(f"unsupported image mode {mode} (expected 8-bit RGB / greyscale or 16-bit greyscale)")
    if kind == "depth":
        _check_depth_mode(mode)
    if kind == "label" and mode not in LABEL_MODES:
        raise ImageFormatError(f"a label image is single-channel 8- or 16-bit class ids, got mode {mode}")


def _check_size(p: Path, expected: tuple[int, int], file: Path, field_name: str, kind: str = "image") -> None:
    try:
        size, mode = _image_header(p)
    except Exception as exc:
        raise SceneError(p, field_name, f"cannot be read as an image ({exc})") from None
    try:
        _check_mode(mode, kind, p.suffix == ".npy")
    except ValueError as exc:
        raise SceneError(p, field_name, str(exc)) from None
    if size != expected:
        raise SceneError(p, field_name,
                         f"is {size[0]}x{size[1]} pixels, {file.name} declares {expected[0]}x{expected[1]}")


def _write_view(view: View, root: Path, image_format: str, stems: set[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": view.name, "width": view.width, "height": view.height,
                             "intrinsics": np.asarray(view.intrinsics).tolist(),
                             "cam_to_world": np.asarray(view.cam_to_world).tolist()}
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in view.name) or "view"
    stem, k = safe, 1
    while stem.lower() in stems:  # "a/b" and "a_b" must not write one file (case-insensitive file systems too)
        k += 1
        stem = f"{safe}_{k}"
    stems.add(stem.lower())
    safe = stem
    (root / "images").mkdir(exist_ok=True)
    if view.image is not None:
        rel = f"images/{safe}.{image_format}"
        if image_format == "jpg":
            Image.fromarray(view.image).save(root / rel, quality=95)
        else:
            Image.fromarray(view.image).save(root / rel)
    elif view.image_path is not None:
        rel = f"images/{safe}{view.image_path.suffix}"
        shutil.copyfile(view.image_path, root / rel)
    else:
        raise SceneError(root / VIEWS_FILE, f"views[{view.name}].image",
                         "view has neither an image file nor an image array")
    entry["image"] = rel
    if view.has_depth:
        (root / "depth").mkdir(exist_ok=True)
        if view.depth is not None:
            rel = f"depth/{safe}.png"
            write_depth_image(root / rel, view.depth, view.depth_scale)
        else:
            assert view.depth_path is not None  # has_depth without an array
            rel = f"depth/{safe}{view.depth_path.suffix}"
            shutil.copyfile(view.depth_path, root / rel)
        entry["depth"] = rel
        entry["depth_scale"] = view.depth_scale
        if view.depth_intrinsics is not None:
            entry.update(depth_intrinsics=np.asarray(view.depth_intrinsics).tolist(),
                         depth_width=view.depth_width, depth_height=view.depth_height)
    if view.has_label:
        (root / "labels").mkdir(exist_ok=True)
        if view.label is not None:
            rel = f"labels/{safe}.png"
            write_label_image(root / rel, view.label)
        else:
            assert view.label_path is not None  # has_label without an array
            rel = f"labels/{safe}{view.label_path.suffix}"
            shutil.copyfile(view.label_path, root / rel)
        entry["label"] = rel
    if view.pixels is not None:
        (root / PIXELS_DIR).mkdir(exist_ok=True)
        rel = f"{PIXELS_DIR}/{safe}.npy"
        atomic_save_npy(root / rel, np.ascontiguousarray(view.pixels, dtype=np.float32))
        entry["pixels"] = rel
    return entry


def _views_from_arrays(images: Sequence[Any], intrinsics: Any, poses: Any, depths: Sequence[Any] | None,
                       where: str) -> list[View]:
    """The views of :meth:`Scene.from_arrays`: sizes, dtypes, intrinsics and rigid poses checked."""
    count = len(images)
    if count == 0:
        if poses is not None or depths is not None:
            raise SceneError(where, "images", "poses or depths were given without images")
        return []
    if intrinsics is None or poses is None:
        raise SceneError(where, "intrinsics" if intrinsics is None else "poses", "images need intrinsics and poses")
    k_one = np.shape(intrinsics) == (3, 3)
    k_all = finite_numbers(intrinsics, (3, 3) if k_one else (count, 3, 3), where, "intrinsics")
    k_all = np.broadcast_to(k_all, (count, 3, 3)) if k_one else k_all
    pose_all = finite_numbers(poses, (count, 4, 4), where, "poses")
    if depths is not None and len(depths) != count:
        raise SceneError(where, "depths", f"{len(depths)} depth maps for {count} images")
    views = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SceneError(where, f"images[{i}]",
                             f"shape {image.shape} dtype {image.dtype}, expected (H, W, 3) uint8")
        height, width = image.shape[:2]
        _check_intrinsics(k_all[i], Path(where), f"intrinsics[{i}]")
        check_rigid_pose(pose_all[i], where, f"poses[{i}]")
        depth = None
        if depths is not None:
            depth = np.asarray(depths[i], dtype=np.float32)
            if depth.shape != (height, width) or not np.isfinite(depth).all() or depth.min() < 0:
                raise SceneError(where, f"depths[{i}]", f"must be finite metres >= 0 of shape {(height, width)}, "
                                                        f"got shape {depth.shape}")
        views.append(View(name=f"view_{i:04d}", width=width, height=height, intrinsics=np.array(k_all[i]),
                          cam_to_world=pose_all[i], image=image, depth=depth))
    return views
