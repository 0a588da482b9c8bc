"""COLMAP reconstructions -> a ditr scene: sparse models (text or binary) and dense workspaces.

A sparse model is a directory with ``cameras``, ``images`` and ``points3D`` files, ``.bin`` (COLMAP's
default, little-endian) or ``.txt`` (both are read here from COLMAP's published format description).
``images`` holds each registered image's world->camera rotation (Hamilton quaternion w, x, y, z)
and translation in COLMAP's camera frame, which is OpenCV's (x right, y down, z forward), so the
camera-to-world pose is simply its inverse.

Layouts found under SRC, in this order of preference:

* a dense workspace (``colmap image_undistorter`` output: ``sparse/``, ``images/``, and after
  ``stereo_fusion`` ``fused.ply``), also when SRC is the project directory holding ``dense/``:
  undistorted PINHOLE cameras and the dense, coloured, oriented points of ``fused.ply``;
* a project directory with ``sparse/0`` (or ``sparse/``) and ``images/``: mapper output whose
  cameras may have lens distortion; the points are the sparse ``points3D``.

Distortion is never silently ignored. Cameras of the radial-tangential models (SIMPLE_RADIAL,
RADIAL, OPENCV, FULL_OPENCV) and the equidistant fisheye models (OPENCV_FISHEYE,
SIMPLE_RADIAL_FISHEYE, RADIAL_FISHEYE, SIMPLE_FISHEYE, FISHEYE) are undistorted at import
(:mod:`ditr.io.undistort`: the images resampled into pinhole images, counted in the report). With
``ignore_distortion`` a perspective camera keeps its images and uses its pinhole part instead,
counted with the largest pixel shift at the image corners. The other models (FOV, division, thin
prism, EUCM, spherical) need COLMAP's undistorter.

Without ``scale`` the scene keeps COLMAP's arbitrary unit: the report says so in a note and
``meta.json`` records ``"units": "unknown"`` (docs/scene-format.md).
"""

from __future__ import annotations

import re
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DitrError, SceneError
from ..scene import View
from .capture import (CaptureReport, assemble_scene, check_unique_names, distortion_shift_px, intrinsics_matrix,
                      pose_from_quaternion, view_name)
from .common import image_size
from .pointfile import PointFile, read_point_file
from .undistort import LensDistortion, check_invertible, undistort_views

#: The lens of each COLMAP model ditr undistorts: (fisheye, which extra parameters are the radial /
#: tangential / denominator coefficients), the extra parameters following f (or fx, fy), cx, cy.
_LENSES: dict[str, tuple[bool, slice, slice | None, slice | None]] = {
    "SIMPLE_PINHOLE": (False, slice(0, 0), None, None), "PINHOLE": (False, slice(0, 0), None, None),
    "SIMPLE_RADIAL": (False, slice(0, 1), None, None), "RADIAL": (False, slice(0, 2), None, None),
    "OPENCV": (False, slice(0, 2), slice(2, 4), None),
    "FULL_OPENCV": (False, slice(0, 2), slice(2, 4), slice(5, 8)),  # k1 k2 p1 p2 k3 k4 k5 k6: k3 added below
    "OPENCV_FISHEYE": (True, slice(0, 4), None, None), "SIMPLE_RADIAL_FISHEYE": (True, slice(0, 1), None, None),
    "RADIAL_FISHEYE": (True, slice(0, 2), None, None), "SIMPLE_FISHEYE": (True, slice(0, 0), None, None),
    "FISHEYE": (True, slice(0, 0), None, None),
}


@dataclass(frozen=True)
class CameraModel:
    id: int
    name: str
    num_params: int
    focal_params: int  # 1: f shared by x and y; 2: fx, fy (then cx, cy, then the distortion parameters)
    family: str  # "perspective" (a pinhole when its distortion is zero), "fisheye" or "spherical"


CAMERA_MODELS = [CameraModel(*spec) for spec in [
    (0, "SIMPLE_PINHOLE", 3, 1, "perspective"), (1, "PINHOLE", 4, 2, "perspective"),
    (2, "SIMPLE_RADIAL", 4, 1, "perspective"), (3, "RADIAL", 5, 1, "perspective"),
    (4, "OPENCV", 8, 2, "perspective"), (5, "OPENCV_FISHEYE", 8, 2, "fisheye"),
    (6, "FULL_OPENCV", 12, 2, "perspective"), (7, "FOV", 5, 2, "perspective"),
    (8, "SIMPLE_RADIAL_FISHEYE", 4, 1, "fisheye"), (9, "RADIAL_FISHEYE", 5, 1, "fisheye"),
    (10, "THIN_PRISM_FISHEYE", 12, 2, "fisheye"), (11, "RAD_TAN_THIN_PRISM_FISHEYE", 16, 2, "fisheye"),
    (12, "SIMPLE_DIVISION", 4, 1, "perspective"), (13, "DIVISION", 5, 2, "perspective"),
    (14, "SIMPLE_FISHEYE", 3, 1, "fisheye"), (15, "FISHEYE", 4, 2, "fisheye"),
    (16, "EUCM", 6, 2, "fisheye"), (17, "EQUIRECTANGULAR", 2, 0, "spherical"),
]]
MODEL_BY_ID = {m.id: m for m in CAMERA_MODELS}
MODEL_BY_NAME = {m.name: m for m in CAMERA_MODELS}


@dataclass
class ColmapCamera:
    id: int
    model: CameraModel
    width: int
    height: int
    params: np.ndarray


@dataclass
class ColmapImage:
    id: int
    qvec: np.ndarray  # world->camera rotation, (w, x, y, z)
    tvec: np.ndarray  # world->camera translation
    camera_id: int
    name: str


@dataclass
class ColmapModel:
    path: Path
    format: str  # "bin" or "txt"
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]

    def file(self, stem: str) -> Path:
        return self.path / f"{stem}.{self.format}"


# ------------------------------------------------------------------------------------- binary files
class _Bytes:
    """A cursor over a little-endian binary file that names the file when it ends too early."""

    def __init__(self, path: Path):
        self.path, self.data, self.pos = path, path.read_bytes(), 0

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise SceneError(self.path, what, f"file ends at byte {len(self.data)}, inside this record (truncated?)")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def cstring(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise SceneError(self.path, what, "name is not NUL-terminated (truncated file?)")
        text = self.data[self.pos:end].decode("utf-8", errors="replace")
        self.pos = end + 1
        return text

    def skip(self, size: int, what: str) -> None:
        if self.pos + size > len(self.data):
            raise SceneError(self.path, what, f"file ends at byte {len(self.data)}, inside this record (truncated?)")
        self.pos += size

    def expect_end(self) -> None:
        if self.pos != len(self.data):
            raise SceneError(self.path, None, f"{len(self.data) - self.pos} bytes left after the last record "
                                              "(not a COLMAP model file of this type?)")


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    """cameras.bin: uint64 count; per camera uint32 id, int32 model id, uint64 width, height, float64 params."""
    f = _Bytes(path)
    cameras = {}
    for i in range(f.unpack("<Q", "number of cameras")[0]):
        camera_id, model_id, width, height = f.unpack("<IiQQ", f"camera[{i}]")
        model = MODEL_BY_ID.get(model_id)
        if model is None:
            raise SceneError(path, f"camera {camera_id}.MODEL", f"unknown camera model id {model_id}")
        params = np.array(f.unpack(f"<{model.num_params}d", f"camera {camera_id}.PARAMS"))
        cameras[camera_id] = ColmapCamera(camera_id, model, width, height, params)
    f.expect_end()
    return cameras


def read_images_binary(path: Path) -> dict[int, ColmapImage]:
    """images.bin: uint64 count; per image uint32 id, 7 float64 (qw qx qy qz tx ty tz), uint32 camera id,
    NUL-terminated name, uint64 keypoint count and 24 bytes per keypoint (x, y, point id; skipped)."""
    f = _Bytes(path)
    images = {}
    for i in range(f.unpack("<Q", "number of images")[0]):
        image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = f.unpack("<I7dI", f"image[{i}]")
        name = f.cstring(f"image {image_id}.NAME")
        keypoints = f.unpack("<Q", f"image {image_id}.POINTS2D")[0]
        f.skip(24 * keypoints, f"image {image_id}.POINTS2D")
        images[image_id] = ColmapImage(image_id, np.array([qw, qx, qy, qz]), np.array([tx, ty, tz]), camera_id, name)
    f.expect_end()
    return images


def read_points3d_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """points3D.bin -> (xyz float64, rgb uint8). Per point: uint64 id, 3 float64, 3 uint8, float64 error,
    uint64 track length, then 8 bytes per track element.

    The records have variable length and the file stores no offsets, so finding where record k
    starts needs the track lengths of all records before it: one cheap pass over the lengths
    (a loop over records, not over values), then every coordinate is gathered at once.
    """
    f = _Bytes(path)
    data = f.data
    count = f.unpack("<Q", "number of points")[0]
    starts = np.empty(count, dtype=np.int64)
    pos = 8
    for i in range(count):
        if pos + 51 > len(data):
            raise SceneError(path, f"point[{i}]", f"file ends at byte {len(data)}, inside this record (truncated?)")
        starts[i] = pos
        pos += 51 + 8 * int.from_bytes(data[pos + 43:pos + 51], "little")
    if pos != len(data):
        raise SceneError(path, None, f"the point records end at byte {pos}, the file at {len(data)} (damaged?)")
    raw = np.frombuffer(data, dtype=np.uint8)
    xyz = raw[starts[:, None] + np.arange(8, 32)].copy().view("<f8").reshape(count, 3)
    rgb = raw[starts[:, None] + np.arange(32, 35)].copy()
    return xyz, rgb


# ------------------------------------------------------------------------------------- text files
def _data_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of every line that is not a ``#`` comment (empty lines kept: images.txt needs them)."""
    return [(n, line) for n, line in enumerate(path.read_text().splitlines(), start=1)
            if not line.lstrip().startswith("#")]


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    """cameras.txt: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]``, one camera per line."""
    cameras = {}
    for n, line in _data_lines(path):
        tokens = line.split()
        if not tokens:
            continue
        where = f"line {n}"
        if len(tokens) < 4:
            raise SceneError(path, where, f"expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[], got {line.strip()!r}")
        model = MODEL_BY_NAME.get(tokens[1])
        if model is None:
            raise SceneError(path, f"{where} MODEL", f"unknown camera model {tokens[1]!r}")
        if len(tokens) - 4 != model.num_params:
            raise SceneError(path, f"{where} PARAMS", f"{model.name} has {model.num_params} parameters, "
                                                      f"found {len(tokens) - 4}")
        try:
            camera_id, width, height = int(tokens[0]), int(tokens[2]), int(tokens[3])
            params = np.array([float(t) for t in tokens[4:]])
        except ValueError:
            raise SceneError(path, where, f"CAMERA_ID, WIDTH, HEIGHT must be integers and PARAMS numbers: "
                                          f"{line.strip()!r}") from None
        cameras[camera_id] = ColmapCamera(camera_id, model, width, height, params)
    return cameras


def read_images_text(path: Path) -> dict[int, ColmapImage]:
    """images.txt: two lines per image, ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` and the keypoints
    (possibly an empty line, which is why empty lines count here)."""
    lines = _data_lines(path)
    if lines and not lines[-1][1].strip() and len(lines) % 2:
        lines = lines[:-1]  # a trailing newline after the last keypoint line
    if len(lines) % 2:
        raise SceneError(path, f"line {lines[-1][0]}", "images.txt holds two lines per image (pose, keypoints); "
                                                      "the last image has no keypoint line")
    images = {}
    for n, line in lines[::2]:
        tokens = line.split()
        where = f"line {n}"
        if len(tokens) < 10:
            raise SceneError(path, where,
                             f"expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, got {line.strip()!r}")
        try:
            image_id, camera_id = int(tokens[0]), int(tokens[8])
            values = np.array([float(t) for t in tokens[1:8]])
        except ValueError:
            raise SceneError(path, where, f"IMAGE_ID and CAMERA_ID must be integers, QW..TZ numbers: "
                                          f"{line.strip()!r}") from None
        images[image_id] = ColmapImage(image_id, values[:4], values[4:], camera_id, " ".join(tokens[9:]))
    return images


_POINT_LINE = re.compile(r"^[ \t]*\d+[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\d+)[ \t]+(\d+)[ \t]+(\d+)[ \t]+\S+",
                         re.M)


def read_points3d_text(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """points3D.txt -> (xyz float64, rgb uint8); the per-point tracks (ragged columns) are skipped."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data" for an empty model
            table = np.loadtxt(path, usecols=range(1, 7), comments="#", dtype=np.float64, ndmin=2)
    except ValueError:
        n, line = _bad_point_line([(n, line) for n, line in _data_lines(path) if line.strip()])
        raise SceneError(path, f"line {n}", "expected POINT3D_ID X Y Z R G B ERROR TRACK[] (integer id and "
                                            f"colours, numeric X Y Z), got {line.strip()[:80]!r}") from None
    table = table.reshape(-1, 6)
    rgb = table[:, 3:]
    if ((rgb < 0) | (rgb > 255) | (rgb != np.round(rgb))).any():
        raise SceneError(path, "R G B", "colour values must be integers 0-255")
    return table[:, :3], rgb.astype(np.uint8)


def _bad_point_line(lines: list[tuple[int, str]]) -> tuple[int, str]:
    """The first points3D.txt line that does not parse (only looked for once parsing has failed)."""
    for n, line in lines:
        match = _POINT_LINE.match(line)
        try:
            if match is None:
                raise ValueError
            [float(x) for x in match.groups()[:3]]
        except ValueError:
            return n, line
    return lines[-1] if lines else (0, "")


# ------------------------------------------------------------------------------------- models
def is_model(directory: Path) -> bool:
    return any((directory / f"cameras.{ext}").is_file() and (directory / f"images.{ext}").is_file()
               for ext in ("bin", "txt"))


def read_model(directory: Path) -> ColmapModel:
    """Cameras and images of a sparse model; binary files are preferred where both exist, as COLMAP does."""
    fmt = "bin" if (directory / "cameras.bin").is_file() and (directory / "images.bin").is_file() else "txt"
    if fmt == "txt" and not is_model(directory):
        raise SceneError(directory, None, "not a COLMAP sparse model (no cameras/images .bin or .txt files)")
    read_cameras, read_images = ((read_cameras_binary, read_images_binary) if fmt == "bin"
                                 else (read_cameras_text, read_images_text))
    return ColmapModel(directory, fmt, read_cameras(directory / f"cameras.{fmt}"),
                       read_images(directory / f"images.{fmt}"))


def read_model_points(model: ColmapModel) -> PointFile:
    """The sparse points of a model (points3D.bin / .txt) as a point cloud with colours."""
    path = model.file("points3D")
    if not path.is_file():
        raise SceneError(path, "points3D", "missing; give the points with --points (e.g. a fused.ply)")
    xyz, rgb = read_points3d_binary(path) if model.format == "bin" else read_points3d_text(path)
    if len(xyz) == 0:
        raise SceneError(path, "points3D", "the model has no 3D points; give the points with --points")
    good = np.isfinite(xyz).all(axis=1)
    return PointFile(path=path, coord=xyz[good], attributes={"color": rgb[good]},
                     dropped_nonfinite=int((~good).sum()))


@dataclass
class Workspace:
    model: Path
    images: Path
    fused: Path | None


def find_workspace(src: Path, model: Path | None = None, images: Path | None = None) -> Workspace:
    """Locate the sparse model, the image directory and ``fused.ply`` under SRC (see module doc)."""
    if not src.is_dir():
        raise DitrError(f"{src}: source directory does not exist")
    root = src / "dense" if is_model(src / "dense" / "sparse") and model is None else src
    if model is None:
        if is_model(root):
            model = root
        elif is_model(root / "sparse"):
            model = root / "sparse"
        else:
            found = sorted(d for d in (root / "sparse").glob("*") if d.is_dir() and is_model(d))
            if not found:
                raise DitrError(f"{src}: no COLMAP model found (looked for cameras/images .bin or .txt in SRC, "
                                "SRC/sparse, SRC/sparse/*, SRC/dense/sparse); point --model at one")
            if len(found) > 1:
                raise DitrError(f"{src}: several models {[d.name for d in found]} in {root / 'sparse'}; COLMAP "
                                "splits a capture it cannot connect. Choose one with --model")
            model = found[0]
    images = images if images is not None else next(
        (d for d in (root / "images", src / "images", model.parent / "images", model.parent.parent / "images")
         if d.is_dir()), None)
    if images is None or not images.is_dir():
        raise DitrError(f"{src}: image directory not found (looked for images/ next to the model); give --images")
    fused = next((f for f in (root / "fused.ply", model.parent / "fused.ply") if f.is_file()), None)
    return Workspace(model=model, images=images, fused=fused)


def camera_lens(camera: ColmapCamera, file: Path) -> tuple[np.ndarray, LensDistortion | None]:
    """(K, lens) of a COLMAP camera; the lens is None for a model ditr cannot undistort."""
    model, p = camera.model, camera.params
    where = f"camera {camera.id} ({model.name})"
    if model.focal_params == 1:
        k = intrinsics_matrix(p[0], p[0], p[1], p[2], file, where)
    elif model.focal_params == 2:
        k = intrinsics_matrix(p[0], p[1], p[2], p[3], file, where)
    else:
        raise SceneError(file, where, f"{model.family} cameras are not pinholes: run colmap image_undistorter and "
                                      "import its output (the dense workspace)")
    extra = p[model.focal_params + 2:]
    if model.name not in _LENSES:
        return k, None
    fisheye, radial, tangential, denominator = _LENSES[model.name]
    coefficients = tuple(float(c) for c in extra[radial])
    if model.name == "FULL_OPENCV":
        coefficients += (float(extra[4]),)
    p1, p2 = (float(c) for c in extra[tangential]) if tangential else (0.0, 0.0)
    return k, LensDistortion(radial=coefficients, tangential=(p1, p2),
                             denominator=tuple(float(c) for c in extra[denominator]) if denominator else (),
                             fisheye=fisheye)


def camera_intrinsics(camera: ColmapCamera, file: Path, ignore_distortion: bool
                      ) -> tuple[np.ndarray, LensDistortion, float | None, bool]:
    """(K, the lens to undistort, pixel shift at the corners if distortion is ignored, whether it is
    ignored) of a COLMAP camera; an error for a camera that is neither a pinhole nor undistortable here."""
    model = camera.model
    where = f"camera {camera.id} ({model.name})"
    k, lens = camera_lens(camera, file)
    if lens is not None and lens.is_pinhole:
        return k, lens, None, False
    extra = camera.params[model.focal_params + 2:]
    if ignore_distortion and model.family == "perspective":
        return k, LensDistortion(), _corner_shift(model.name, extra, k, camera.width, camera.height), True
    if lens is None and model.family == "perspective":
        raise SceneError(file, where, f"has lens distortion {extra.tolist()} of a model ditr does not undistort: run "
                                      "colmap image_undistorter and import its output (the dense workspace), or pass "
                                      "--ignore-distortion to use the pinhole part only")
    if lens is None:
        raise SceneError(file, where, f"{model.family} cameras are not pinholes and ditr does not undistort "
                                      f"{model.name}: run colmap image_undistorter and import its output (the dense "
                                      "workspace)")
    if ignore_distortion:
        raise SceneError(file, where, "fisheye cameras are not pinholes, not even approximately: import without "
                                      "--ignore-distortion to undistort their images")
    check_invertible(k, lens, camera.width, camera.height, file, where)
    return k, lens, None, False


def _corner_shift(name: str, extra: np.ndarray, k: np.ndarray, width: int, height: int) -> float | None:
    """Pixel shift at the corners of the radial-tangential models (unknown, None, for FOV and division)."""
    if name in ("SIMPLE_RADIAL", "RADIAL"):
        return distortion_shift_px(k, width, height, radial=tuple(extra))
    if name == "OPENCV":
        return distortion_shift_px(k, width, height, radial=tuple(extra[:2]), tangential=tuple(extra[2:4]))
    if name == "FULL_OPENCV":  # k1 k2 p1 p2 k3 k4 k5 k6
        return distortion_shift_px(k, width, height, radial=(extra[0], extra[1], extra[4]),
                                   tangential=(extra[2], extra[3]), radial_denominator=tuple(extra[5:8]))
    return None


def colmap_views(model: ColmapModel, images_dir: Path, *, ignore_distortion: bool, frame_step: int,
                 report: CaptureReport) -> tuple[list[View], list[LensDistortion]]:
    """One view per registered image (sorted by name, every ``frame_step``-th) whose file exists, and
    the lens of each (to undistort: :func:`ditr.io.undistort.undistort_views`)."""
    cameras_file, images_file = model.file("cameras"), model.file("images")
    intrinsics: dict[int, tuple[np.ndarray, LensDistortion, float | None, bool]] = {}
    views, lenses, shifts = [], [], []
    for image in sorted(model.images.values(), key=lambda im: im.name)[::frame_step]:
        where = f"image {image.id} ({image.name})"
        camera = model.cameras.get(image.camera_id)
        if camera is None:
            raise SceneError(images_file, f"{where}.CAMERA_ID",
                             f"camera {image.camera_id} is not in {cameras_file.name}")
        path = images_dir / image.name
        if not path.is_file():
            report.skipped_missing_image += 1
            continue
        if camera.id not in intrinsics:
            intrinsics[camera.id] = camera_intrinsics(camera, cameras_file, ignore_distortion)
        k, lens, shift, distorted = intrinsics[camera.id]
        size = image_size(path, where)
        if size != (camera.width, camera.height):
            raise SceneError(path, f"camera {camera.id}.WIDTH/HEIGHT",
                             f"the image is {size[0]}x{size[1]}, {cameras_file.name} declares {camera.width}x"
                             f"{camera.height} (resized copies? point --images at the images COLMAP used)")
        world_to_cam = pose_from_quaternion(image.qvec, image.tvec, images_file, where)
        views.append(View(name=view_name(image.name), width=camera.width, height=camera.height, intrinsics=k,
                          cam_to_world=np.linalg.inv(world_to_cam), image_path=path))
        lenses.append(lens)
        if distorted:
            report.distortion_ignored_views += 1
            shifts.append(shift)
    known = [s for s in shifts if s is not None]
    if known:
        report.distortion_ignored_max_px = round(max(known), 2)
    check_unique_names(views, images_file)
    return views, lenses


def import_colmap(src: str | Path, out: str | Path, *, model: str | Path | None = None,
                  images: str | Path | None = None, points: str | Path | None = None, scale: float | None = None,
                  up: str = "keep", ignore_distortion: bool = False, frame_step: int = 1,
                  acquisition: str | None = None, estimate_normals: bool = False) -> CaptureReport:
    """Import a COLMAP workspace or sparse model (see module doc) as one scene in ``out``.

    ``acquisition`` (what made the points) defaults to what COLMAP's own points are: ``mvs`` for a
    dense workspace's ``fused.ply``, ``sfm`` for the sparse ``points3D``, ``unknown`` for ``points``.
    ``scale`` (metres per COLMAP unit) None: unknown, the scene keeps COLMAP's unit (noted, recorded).
    Distorted cameras are undistorted (see the module doc) unless ``ignore_distortion``.
    """
    src, out = Path(src), Path(out)
    if frame_step < 1:
        raise DitrError(f"--frame-step must be >= 1, got {frame_step}")
    ws = find_workspace(src, Path(model) if model else None, Path(images) if images else None)
    sparse = read_model(ws.model)
    if not sparse.images:
        raise SceneError(sparse.file("images"), None, "the model has no registered images")
    report = CaptureReport()
    views, lenses = colmap_views(sparse, ws.images, ignore_distortion=ignore_distortion, frame_step=frame_step,
                                 report=report)
    point_path = Path(points) if points else ws.fused
    cloud = read_point_file(point_path) if point_path else read_model_points(sparse)
    report.point_source = str(cloud.path)
    report.source = {"model": str(ws.model), "format": sparse.format, "images": str(ws.images),
                     "points": str(cloud.path)}
    meta = {"dataset": "colmap", "name": out.name, "source": report.source}
    made_by = acquisition or ("unknown" if points else "mvs" if ws.fused else "sfm")
    with tempfile.TemporaryDirectory(prefix="ditr-undistorted-") as folder:  # copied into the scene by its save
        report.undistorted_views = undistort_views(views, lenses, Path(folder))
        assemble_scene(cloud, views, out, scale=scale, up=up, meta=meta, report=report, acquisition=made_by,
                       estimate_normals=estimate_normals)
    return report
