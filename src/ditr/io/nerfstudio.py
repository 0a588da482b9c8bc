"""nerfstudio / instant-ngp ``transforms.json`` -> a ditr scene.

``transforms.json`` lists frames with ``file_path`` (relative to the file) and ``transform_matrix``, a
camera-to-world pose in the OpenGL/Blender camera convention (x right, y up, z backward): the
OpenCV pose is that matrix with its camera y and z axes negated. Intrinsics are top-level keys
that a frame may override: ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``, ``camera_model`` and the
distortion ``k1``-``k4``, ``p1``, ``p2``; instant-ngp files may give only ``camera_angle_x`` (the
horizontal field of view; then ``cx, cy`` default to the image centre) and may omit ``w``/``h`` and
the image extension (``./train/r_0``), which are then taken from the image files.

What is applied, and what is not:

* ``applied_transform`` (nerfstudio's change of world axes from COLMAP's frame, ``ns-process-data``)
  is already in the poses and in its ``sparse_pc.ply`` (``ply_file_path``); it is applied to the
  points only with ``points_frame="colmap"``, for a cloud still in COLMAP's frame (e.g. ``fused.ply``).
* ``dataparser_transforms.json`` (written with a trained nerfstudio model: orientation, centring
  and ``scale``) is undone on the points with ``points_frame="dataparser"``, for a cloud exported
  in the normalised training frame (``ns-export pointcloud``).
* instant-ngp's ``aabb_scale``, ``scale`` and ``offset`` are not applied: they map the scene into
  instant-ngp's internal unit cube, and the points must be in the frame of the file's own poses.
* Per-frame ``depth_file_path`` (Record3D, Polycam) becomes the view's depth map (``depth_unit`` metres
  per stored value, 1 mm by default, as nerfstudio assumes), used for occlusion.
* Lens distortion (``k1``-``k4``, ``p1``, ``p2`` of the OPENCV model; ``k1``-``k4`` of
  OPENCV_FISHEYE, or ``is_fisheye``) is undone: the images (and depth maps) are resampled into
  pinhole images (:mod:`ditr.io.undistort`), unless ``ignore_distortion`` keeps a perspective
  camera's images and uses its pinhole part.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import DitrError, SceneError
from ..scene import View
from .capture import (OPENGL_TO_OPENCV, CaptureReport, assemble_scene, check_unique_names, distortion_shift_px,
                      intrinsics_matrix, rigid_pose, view_name)
from .common import image_size, read_json
from .pointfile import PointFile, read_point_file
from .undistort import LensDistortion, check_invertible, undistort_views

POINTS_FRAMES = ("transforms", "colmap", "dataparser")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPG", ".PNG", ".JPEG")
_NOT_PINHOLE = ("EQUIRECTANGULAR", "OMNIDIRECTIONALSTEREO_L", "VR180_L")
_FISHEYE = ("OPENCV_FISHEYE", "FISHEYE")
_INSTANT_NGP_KEYS = ("aabb_scale", "scale", "offset")


def find_transforms(src: Path, name: str | None = None) -> Path:
    """The transforms file: SRC itself, or SRC/<name> (default transforms.json)."""
    path = src if src.is_file() else src / (name or "transforms.json")
    if not path.is_file():
        found = sorted(p.name for p in src.glob("transforms*.json")) if src.is_dir() else []
        hint = f" (found {found}: choose one with --transforms)" if found else ""
        raise DitrError(f"{path}: transforms file not found{hint}")
    return path


def _load(path: Path) -> dict[str, Any]:
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list):
        raise SceneError(path, "frames", "must be a list of frames")
    return doc


def resolve_image(base: Path, file_path: str) -> Path | None:
    """The image a frame names; instant-ngp's Blender scenes omit the extension (``./train/r_0``)."""
    path = base / file_path
    if path.is_file():
        return path
    if not path.suffix:
        return next((p for p in (path.with_suffix(s) for s in _IMAGE_SUFFIXES) if p.is_file()), None)
    return None


def frame_camera(doc: dict[str, Any], frame: dict[str, Any], image: Path, file: Path, where: str,
                 ignore_distortion: bool) -> tuple[np.ndarray, int, int, LensDistortion, float | None]:
    """(K, width, height, the lens to undistort, corner shift of ignored distortion or None) of one frame."""
    def get(key: str) -> Any:
        return frame.get(key, doc.get(key))

    actual = image_size(image, where)
    width, height = get("w"), get("h")
    if width is not None and height is not None and (int(width), int(height)) != actual:
        raise SceneError(image, f"{where}.w/h", f"the image is {actual[0]}x{actual[1]}, {file.name} declares "
                                                f"{width}x{height}")
    width, height = actual
    model = get("camera_model") or "OPENCV"
    if model in _NOT_PINHOLE:
        raise SceneError(file, f"{where}.camera_model", f"{model} images are not pinhole images and ditr does not "
                                                        "undistort them; convert them to pinhole images first")
    fisheye = model in _FISHEYE or bool(get("is_fisheye"))
    if fisheye and ignore_distortion:
        raise SceneError(file, f"{where}.camera_model", "fisheye images are not pinhole images, not even "
                                                        "approximately: import without --ignore-distortion to "
                                                        "undistort them")
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None:
        angle = get("camera_angle_x")
        if angle is None:
            raise SceneError(file, f"{where}.fl_x", "missing, and no camera_angle_x to derive it from")
        fx = 0.5 * width / math.tan(0.5 * float(angle))
    if fy is None:
        angle = get("camera_angle_y")
        fy = 0.5 * height / math.tan(0.5 * float(angle)) if angle is not None else fx
    cx, cy = get("cx"), get("cy")
    k = intrinsics_matrix(fx, fy, width / 2 if cx is None else cx, height / 2 if cy is None else cy, file, where)
    radial = tuple(float(get(key) or 0.0) for key in ("k1", "k2", "k3", "k4"))
    tangential = (float(get("p1") or 0.0), float(get("p2") or 0.0))
    lens = LensDistortion(radial, (0.0, 0.0) if fisheye else tangential, fisheye=fisheye)
    if lens.is_pinhole:
        return k, width, height, lens, None
    if ignore_distortion:
        return k, width, height, LensDistortion(), distortion_shift_px(k, width, height, radial=radial,
                                                                       tangential=tangential)
    check_invertible(k, lens, width, height, file, f"{where}.k1..p2")
    return k, width, height, lens, None


def _points_to_transforms_frame(cloud: PointFile, doc: dict[str, Any], file: Path, frame: str,
                                dataparser: Path | None) -> PointFile:
    """Bring points given in COLMAP's or nerfstudio's training frame into the frame of the poses."""
    if frame == "transforms":
        return cloud
    if frame == "colmap":
        if "applied_transform" not in doc:
            raise SceneError(file, "applied_transform", "missing, so COLMAP-frame points cannot be placed; "
                                                        "use points in this file's frame (--points-frame transforms)")
        matrix = rigid_pose(doc["applied_transform"], file, "applied_transform")
    else:
        if dataparser is None or not dataparser.is_file():
            raise DitrError(f"--points-frame dataparser needs --dataparser-transforms FILE "
                            f"(dataparser_transforms.json of the trained model), got {dataparser}")
        dp = _load_dataparser(dataparser)
        matrix = np.linalg.inv(rigid_pose(dp["transform"], dataparser, "transform")) @ np.diag(
            [1.0 / dp["scale"]] * 3 + [1.0])
    coord = cloud.coord @ matrix[:3, :3].T + matrix[:3, 3]
    attributes = dict(cloud.attributes)
    if "normal" in attributes:
        rotation = matrix[:3, :3] / np.cbrt(np.linalg.det(matrix[:3, :3]))
        attributes["normal"] = (attributes["normal"] @ rotation.T).astype(np.float32)
    return PointFile(cloud.path, coord, attributes, cloud.dropped_nonfinite, cloud.dropped_invalid)


def _load_dataparser(path: Path) -> dict[str, Any]:
    dp = read_json(path)
    if not isinstance(dp, dict) or "transform" not in dp:
        raise SceneError(path, "transform", "missing (expected nerfstudio's dataparser_transforms.json)")
    scale = dp.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise SceneError(path, "scale", f"must be a positive number, got {scale!r}")
    return dp


def import_nerfstudio(src: str | Path, out: str | Path, *, transforms: str | None = None,
                      points: str | Path | None = None, points_frame: str = "transforms",
                      dataparser_transforms: str | Path | None = None, scale: float = 1.0, up: str = "keep",
                      ignore_distortion: bool = False, frame_step: int = 1, depth_unit: float = 0.001,
                      acquisition: str | None = None, estimate_normals: bool = False) -> CaptureReport:
    """Import a nerfstudio / instant-ngp capture (see module doc) as one scene in ``out``.

    ``acquisition`` (what made the points) defaults to ``sfm`` for the ``ply_file_path`` cloud
    (``ns-process-data`` writes COLMAP's sparse points there) and ``unknown`` for ``points``.
    """
    src, out = Path(src), Path(out)
    if points_frame not in POINTS_FRAMES:
        raise DitrError(f"--points-frame must be one of {POINTS_FRAMES}, got {points_frame!r}")
    if frame_step < 1 or not depth_unit > 0:
        raise DitrError(f"--frame-step ({frame_step}) must be >= 1 and --depth-unit ({depth_unit}) positive")
    file = find_transforms(src, transforms)
    doc = _load(file)
    report = CaptureReport()
    views, lenses, shifts = [], [], []
    for i, frame in enumerate(doc["frames"]):
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise SceneError(file, f"frames[{i}].file_path", "each frame needs a file_path (string)")
    chosen = list(enumerate(doc["frames"]))[::frame_step]
    names = _view_names([frame["file_path"] for _, frame in chosen])
    for (i, frame), name in zip(chosen, names):
        where = f"frames[{i}]"
        if "transform_matrix" not in frame:
            raise SceneError(file, f"{where}.transform_matrix", "missing")
        image = resolve_image(file.parent, frame["file_path"])
        if image is None:
            report.skipped_missing_image += 1
            continue
        k, width, height, lens, shift = frame_camera(doc, frame, image, file, where, ignore_distortion)
        pose = rigid_pose(frame["transform_matrix"], file, f"{where}.transform_matrix") @ OPENGL_TO_OPENCV
        view = View(name=name, width=width, height=height, intrinsics=k, cam_to_world=pose, image_path=image)
        _attach_depth(view, frame, file.parent, where, depth_unit)  # metric already: --scale does not apply
        views.append(view)
        lenses.append(lens)
        if shift is not None:
            report.distortion_ignored_views += 1
            shifts.append(shift)
    if shifts:
        report.distortion_ignored_max_px = round(max(shifts), 2)
    check_unique_names(views, file)
    point_path = Path(points) if points else _ply_file_path(doc, file)
    cloud = _points_to_transforms_frame(read_point_file(point_path), doc, file, points_frame,
                                        Path(dataparser_transforms) if dataparser_transforms else None)
    present = [key for key in _INSTANT_NGP_KEYS if key in doc]
    if present:
        report.notes.append(f"instant-ngp {present} not applied: they map into instant-ngp's unit cube; the points "
                            "must be in the frame of transform_matrix")
    report.point_source = str(point_path)
    report.source = {"transforms": str(file), "points": str(point_path), "points_frame": points_frame}
    meta = {"dataset": "nerfstudio", "name": out.name, "source": report.source}
    with tempfile.TemporaryDirectory(prefix="ditr-undistorted-") as folder:  # copied into the scene by its save
        report.undistorted_views = undistort_views(views, lenses, Path(folder))
        assemble_scene(cloud, views, out, scale=scale, up=up, meta=meta, report=report,
                       acquisition=acquisition or ("unknown" if points else "sfm"),
                       estimate_normals=estimate_normals)
    return report


def _view_names(file_paths: list[str]) -> list[str]:
    """View names: the image paths without extension, relative to the directory all images share."""
    paths = [PurePosixPath(view_name(p)) for p in file_paths]
    try:
        common = PurePosixPath(os.path.commonpath([str(p.parent) for p in paths])) if paths else None
    except ValueError:  # absolute and relative paths mixed
        common = None
    return [str(p.relative_to(common)) if common is not None else str(p) for p in paths]


def _ply_file_path(doc: dict[str, Any], file: Path) -> Path:
    if not isinstance(doc.get("ply_file_path"), str):
        raise SceneError(file, "ply_file_path", "missing: give the points with --points FILE")
    return file.parent / doc["ply_file_path"]


def _attach_depth(view: View, frame: dict[str, Any], base: Path, where: str, metres_per_unit: float) -> None:
    """Use the frame's depth map (any resolution; its intrinsics follow the colour camera's, scaled)."""
    rel = frame.get("depth_file_path")
    if not isinstance(rel, str):
        return
    path = base / rel
    if not path.is_file():
        raise SceneError(path, f"{where}.depth_file_path", "depth map not found")
    dw, dh = image_size(path, f"{where}.depth_file_path") if path.suffix != ".npy" else np.load(
        path, mmap_mode="r").shape[1::-1]
    view.depth_path, view.depth_scale = path, 1.0 / metres_per_unit
    if (dw, dh) != (view.width, view.height):
        sx, sy = dw / view.width, dh / view.height
        view.depth_intrinsics = np.diag([sx, sy, 1.0]) @ view.intrinsics
        view.depth_width, view.depth_height = dw, dh
