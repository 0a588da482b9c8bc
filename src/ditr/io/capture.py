"""Your own capture -> a ditr scene: shared pose/camera conventions and the plain points+images+poses importer.

The COLMAP and nerfstudio importers and ``ditr import capture`` all end in :func:`assemble_scene`,
which applies what every own capture may need and records it in ``meta.json``:

* ``--scale`` (metres per source unit): structure-from-motion is only defined up to scale, while
  the voxel grid (2 cm indoors) and the depth tolerance (0.2 m) are in metres. The scale multiplies
  points and camera positions alike, so the pixels every point projects to do not change.
* ``--up``: a rotation that makes the gravity direction +z (models trained on ScanNet expect z
  up); ``cameras`` takes the mean "up" of the cameras (people hold cameras upright).
* A georeferenced cloud (coordinates beyond 10 km, e.g. UTM) is moved near the origin before it
  becomes float32, which would otherwise round it to decimetres.

``meta.json`` stores the similarity as ``transform_from_source`` (4x4, ``p_scene = M p_source``) so
that predictions can be taken back into the source frame.

Plain capture layout (``ditr import capture POINTS IMAGES POSES OUT``): a point file (any format of
:mod:`ditr.io.pointfile`), a directory of images and a poses file, JSON or text (see
:func:`read_poses`); ``convention`` (opencv: x right, y down, z forward; opengl: x right, y up,
z backward) and ``pose_direction`` (cam_to_world or world_to_cam) say how to read the poses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DitrError, SceneError
from ..normals import scene_normals
from ..scene import ACQUISITION_KINDS, Scene, View, finite_numbers
from .common import image_size, quaternion_to_rotation, read_json
from .pointfile import PointFile, read_point_file

#: Right-multiplying an OpenGL/Blender camera-to-world (x right, y up, z back) gives OpenCV's
#: (x right, y down, z forward).
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
UP_CHOICES = ("keep", "cameras", "+x", "-x", "+y", "-y", "+z", "-z")
CONVENTIONS = ("opencv", "opengl")
POSE_DIRECTIONS = ("cam_to_world", "world_to_cam")
#: Coordinates beyond this many metres are moved near the origin before becoming float32 (1 mm steps at 8 km).
_FAR = 1.0e4


@dataclass
class CaptureReport:
    """What an own-capture import did; skipped and dropped input is counted here, not hidden."""

    points: int = 0
    views: int = 0
    point_source: str = ""
    source: dict[str, str] = field(default_factory=dict)
    dropped_nonfinite_points: int = 0
    dropped_invalid_points: int = 0
    skipped_missing_image: int = 0
    distortion_ignored_views: int = 0
    distortion_ignored_max_px: float | None = None
    #: Views whose images were resampled into pinhole images (:mod:`ditr.io.undistort`).
    undistorted_views: int = 0
    scale: float = 1.0
    #: "metres", or "unknown" where no --scale gave the capture's unit (COLMAP without --scale).
    units: str = "metres"
    up: str = "keep"
    extent_m: list[float] = field(default_factory=list)
    mean_camera_up: list[float] = field(default_factory=list)
    #: "source" (the point file's), "estimated" (:func:`ditr.normals.scene_normals`) or "none".
    normals: str = "none"
    #: Points whose estimated normal is zero: fewer than 3 points within the estimator's 3x3x3 cubes.
    normals_undefined_points: int = 0
    notes: list[str] = field(default_factory=list)
    #: Where the points are too sparse for an occlusion test (:func:`~ditr.projection.sparse_warning`).
    visibility_warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------- poses and cameras
def pose_from_quaternion(q: Any, t: Any, file: Path | str, where: str) -> np.ndarray:
    """4x4 rigid transform from a (w, x, y, z) quaternion and a translation, checked for sense."""
    q = finite_numbers(q, (4,), file, f"{where} quaternion")
    t = finite_numbers(t, (3,), file, f"{where} translation")
    if np.linalg.norm(q) < 1e-6:
        raise SceneError(file, f"{where} quaternion", "is zero; a rotation quaternion has unit length")
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = quaternion_to_rotation(q), t
    return pose


def rigid_pose(matrix: Any, file: Path | str, where: str) -> np.ndarray:
    """A 3x4 or 4x4 rigid transform as 4x4, refusing scaled, mirrored or non-finite matrices."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneError(file, where, "must be a 4x4 (or 3x4) matrix of numbers") from None
    if m.shape not in ((3, 4), (4, 4)):
        raise SceneError(file, where, f"shape {list(m.shape)}, expected a 4x4 (or 3x4) matrix")
    if not np.isfinite(m).all():
        raise SceneError(file, where, "contains NaN or infinite values")
    pose = np.eye(4)
    pose[:len(m)] = m
    if not np.allclose(pose[3], [0, 0, 0, 1]):
        raise SceneError(file, where, f"last row must be [0, 0, 0, 1], got {pose[3].tolist()}")
    r = pose[:3, :3]
    error = float(np.abs(r @ r.T - np.eye(3)).max())
    if error > 1e-3:
        raise SceneError(file, where, f"rotation part is not orthonormal (|R R^T - I| = {error:.3g}): "
                                      "a rigid camera pose has no scale or shear")
    if np.linalg.det(r) < 0:
        raise SceneError(file, where, "rotation part is a reflection (det -1): a handedness mix-up, e.g. only one "
                                      "axis flipped between the OpenGL and OpenCV conventions")
    return pose


def intrinsics_matrix(fx: Any, fy: Any, cx: Any, cy: Any, file: Path | str, where: str) -> np.ndarray:
    fx, fy, cx, cy = finite_numbers([fx, fy, cx, cy], (4,), file, f"{where} fx/fy/cx/cy")
    if fx <= 0 or fy <= 0:
        raise SceneError(file, where, f"focal lengths must be positive pixels, got fx={fx}, fy={fy}")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def distortion_shift_px(k: np.ndarray, width: int, height: int, radial: tuple[float, ...] = (),
                        tangential: tuple[float, float] = (0.0, 0.0),
                        radial_denominator: tuple[float, ...] = ()) -> float:
    """Largest pixel shift the radial-tangential (OpenCV) distortion causes at the image corners.

    ``radial`` are the r^2, r^4, ... coefficients (k1, k2, k3), ``radial_denominator`` the rational
    model's k4..k6; this says how far off the corners land when the distortion is ignored.
    """
    u = np.array([0.0, width, 0.0, width])
    v = np.array([0.0, 0.0, height, height])
    x, y = (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]
    r2 = x * x + y * y
    num = 1 + sum(c * r2 ** (i + 1) for i, c in enumerate(radial))
    den = 1 + sum(c * r2 ** (i + 1) for i, c in enumerate(radial_denominator))
    p1, p2 = tangential
    xd = x * num / den + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * num / den + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return float(np.hypot(k[0, 0] * (xd - x), k[1, 1] * (yd - y)).max())


def view_name(image: str) -> str:
    """A view's name: the image's relative path without its extension (``cam1/0001.jpg`` -> ``cam1/0001``)."""
    return Path(image).with_suffix("").as_posix()


def check_unique_names(views: list[View], file: Path | str) -> None:
    seen: set[str] = set()
    for v in views:
        if v.name in seen:
            raise SceneError(file, v.name, "two images map to the same view name (same path, other extension)")
        seen.add(v.name)


# --------------------------------------------------------------------------------- scene assembly
def up_rotation(up: str, views: list[View]) -> np.ndarray:
    """The rotation that takes the chosen up direction to +z (identity for ``keep``)."""
    if up not in UP_CHOICES:
        raise DitrError(f"--up must be one of {', '.join(UP_CHOICES)}, not {up!r}")
    if up == "keep":
        return np.eye(3)
    if up == "cameras":
        if not views:
            raise DitrError("--up cameras needs views to estimate the up direction from")
        direction = -np.mean([v.cam_to_world[:3, 1] for v in views], axis=0)  # camera y points down
        if np.linalg.norm(direction) < 1e-6:
            raise DitrError("--up cameras: the cameras' up directions cancel out; give the axis (e.g. --up -y)")
    else:
        direction = np.zeros(3)
        direction["xyz".index(up[1])] = 1.0 if up[0] == "+" else -1.0
    return _rotation_onto_z(direction / np.linalg.norm(direction))


def _rotation_onto_z(d: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``d`` onto +z (Rodrigues); a half turn about x for -z."""
    z = np.array([0.0, 0.0, 1.0])
    axis, cos = np.cross(d, z), float(d @ z)
    if np.linalg.norm(axis) < 1e-12:
        return np.eye(3) if cos > 0 else np.diag([1.0, -1.0, -1.0])
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + skew + skew @ skew / (1.0 + cos)


def assemble_scene(cloud: PointFile, views: list[View], out: Path, *, scale: float | None = 1.0, up: str = "keep",
                   meta: dict[str, Any], report: CaptureReport, acquisition: str = "unknown",
                   estimate_normals: bool = False) -> Scene:
    """Scale, orient and (if far from the origin) re-centre points and cameras together; save the scene.

    With ``estimate_normals``, a cloud without normals gets them from its points, in metres and
    facing the cameras (the indoor presets read normals).

    ``acquisition`` (what made the points, :data:`~ditr.scene.ACQUISITION_KINDS`) goes into
    ``meta.json``; for a structure-from-motion cloud, the report says where its points are too sparse
    for an occlusion test (:func:`~ditr.projection.sparse_warning`). ``scale`` None: the capture's
    unit is not known (a reconstruction without metric scale); the scene keeps it, ``meta.json``
    says ``"units": "unknown"`` and the report's notes say how to give the scale.
    """
    units = "metres" if scale is not None else "unknown"
    scale = 1.0 if scale is None else scale
    if acquisition not in ACQUISITION_KINDS:
        raise DitrError(f"--acquisition must be one of {', '.join(ACQUISITION_KINDS)}, not {acquisition!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise DitrError(f"--scale must be a positive number of metres per source unit, got {scale}")
    if not views:
        raise DitrError("no views left to import (see the counts of skipped images above)")
    rotation = up_rotation(up, views)
    linear = scale * rotation
    coord = cloud.coord @ linear.T
    far = float(np.abs(coord).max())
    shift = -np.round((coord.min(axis=0) + coord.max(axis=0)) / 2) if far > _FAR else np.zeros(3)
    coord += shift
    similarity = np.eye(4)
    similarity[:3, :3], similarity[:3, 3] = linear, shift
    attributes = dict(cloud.attributes)
    if "normal" in attributes:
        attributes["normal"] = (attributes["normal"] @ rotation.T).astype(np.float32)
    for v in views:
        pose = np.eye(4)
        pose[:3, :3] = rotation @ v.cam_to_world[:3, :3]
        pose[:3, 3] = linear @ v.cam_to_world[:3, 3] + shift
        v.cam_to_world = pose
    if "normal" in attributes:
        report.normals = "source"
    elif estimate_normals:
        attributes["normal"] = scene_normals(coord, views)
        report.normals = "estimated"
        report.normals_undefined_points = int((attributes["normal"] == 0).all(axis=1).sum())
    meta = {**meta, "scale": scale, "up": up, "transform_from_source": similarity.tolist(),
            "acquisition": {"kind": acquisition}, **({"units": units} if units == "unknown" else {})}
    scene = Scene(coord=coord.astype(np.float32), attributes=attributes, views=views, meta=meta)
    scene.save(out)
    if acquisition == "sfm":  # sparse by nature: say where no occlusion test can be trusted
        from ..projection import project_scene

        report.visibility_warnings = project_scene(scene).warnings
    report.points, report.views = scene.num_points, len(views)
    report.dropped_nonfinite_points += cloud.dropped_nonfinite
    report.dropped_invalid_points += cloud.dropped_invalid
    report.scale, report.up, report.units = scale, up, units
    report.extent_m = np.round(coord.max(axis=0) - coord.min(axis=0), 3).tolist()
    if units == "unknown":
        report.notes.append(unknown_scale_note(report.extent_m))
    report.mean_camera_up = np.round(-np.mean([v.cam_to_world[:3, 1] for v in views], axis=0), 3).tolist()
    if far > _FAR:
        report.notes.append(f"coordinates reach {far:.0f} m: moved by {shift.tolist()} (in transform_from_source)")
    if report.normals == "none":
        report.notes.append("the points have no normals, which the indoor presets read: import again with "
                            "--normals estimate")
    return scene


def unknown_scale_note(extent: list[float]) -> str:
    """What an import without a scale means, and how to give one."""
    size = " x ".join(f"{x:.3g}" for x in extent)
    return (f"no --scale: the scene keeps the reconstruction's arbitrary unit ({size} units across), but voxel sizes "
            "(2 cm indoors), depth tolerances (0.2 m) and the presets assume metres. Measure one known length in "
            "the reconstruction and import again with --scale TRUE_METRES/MEASURED_UNITS (e.g. a 0.90 m wide door "
            "that measures 0.30 units: --scale 3); meta.json records units: unknown until then")


# --------------------------------------------------------------------------------- plain capture
@dataclass
class PoseEntry:
    """One line / frame of a poses file, before the convention and direction are applied."""

    image: str
    intrinsics: np.ndarray
    pose: np.ndarray  # 4x4 as written in the file
    where: str


def read_poses(path: Path) -> tuple[list[PoseEntry], dict[str, str]]:
    """Read a poses file (``.json``, else text) -> entries plus the conventions the file declares.

    Text (``.txt``/``.csv``): one image per line, separated by spaces or commas, ``#`` comments and
    an optional header row; the number of values after the image name picks the pose layout::

        image fx fy cx cy qw qx qy qz tx ty tz               (12 values: quaternion w x y z + translation)
        image fx fy cx cy r00 r01 r02 tx r10 ... r22 tz       (17: top 3 rows of the 4x4, row-major)
        image fx fy cx cy m00 m01 ... m33                     (21: the full 4x4, row-major)

    JSON: ``{"convention": ..., "pose_direction": ..., "intrinsics": {"fx", "fy", "cx", "cy"},
    "frames": [{"image": ..., "matrix": 4x4 | 3x4} | {"image": ..., "quaternion": [w, x, y, z],
    "translation": [x, y, z]}, ...]}`` where a frame may carry its own ``intrinsics`` (dict or 3x3).
    """
    if not path.is_file():
        raise SceneError(path, None, "poses file not found")
    if path.suffix.lower() == ".json":
        return _read_poses_json(path)
    return _read_poses_text(path), {}


def _read_poses_text(path: Path) -> list[PoseEntry]:
    entries, first = [], True
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split("#", 1)[0].replace(",", " ").split()
        if not tokens:
            continue
        where = f"line {number}"
        try:
            values = np.array([float(t) for t in tokens[1:]])
        except ValueError:
            if first:  # a header row such as "image,fx,fy,..."
                first = False
                continue
            raise SceneError(path, where, f"expected an image name and numbers, got {line.strip()!r}") from None
        first = False
        if values.size not in (11, 16, 20):
            raise SceneError(path, where, f"{values.size} numbers after the image name; expected 11 "
                                          "(fx fy cx cy qw qx qy qz tx ty tz), 16 (fx fy cx cy + 3x4) or 20 (+ 4x4)")
        k = intrinsics_matrix(*values[:4], path, where)
        if values.size == 11:
            pose = pose_from_quaternion(values[4:8], values[8:11], path, where)
        else:
            pose = rigid_pose(values[4:].reshape(-1, 4), path, f"{where} matrix")
        entries.append(PoseEntry(tokens[0], k, pose, where))
    return entries


def _read_poses_json(path: Path) -> tuple[list[PoseEntry], dict[str, str]]:
    doc = read_json(path)
    doc = {"frames": doc} if isinstance(doc, list) else doc
    if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list):
        raise SceneError(path, "frames", "must be a list of frames (or the file a JSON list of frames)")
    declared = {key: doc[key] for key in ("convention", "pose_direction") if key in doc}
    default_k = doc.get("intrinsics")
    entries = []
    for i, frame in enumerate(doc["frames"]):
        where = f"frames[{i}]"
        if not isinstance(frame, dict) or not isinstance(frame.get("image"), str):
            raise SceneError(path, f"{where}.image", "each frame needs an image name (string)")
        k = _json_intrinsics(frame.get("intrinsics", default_k), path, f"{where}.intrinsics")
        if "matrix" in frame:
            pose = rigid_pose(frame["matrix"], path, f"{where}.matrix")
        elif "quaternion" in frame and "translation" in frame:
            pose = pose_from_quaternion(frame["quaternion"], frame["translation"], path, where)
        else:
            raise SceneError(path, where, 'needs "matrix" (4x4) or "quaternion" [w, x, y, z] + "translation"')
        entries.append(PoseEntry(frame["image"], k, pose, where))
    return entries, declared


def _json_intrinsics(value: Any, path: Path, where: str) -> np.ndarray:
    if isinstance(value, dict):
        missing = [key for key in ("fx", "fy", "cx", "cy") if key not in value]
        if missing:
            raise SceneError(path, f"{where}.{missing[0]}", "missing")
        return intrinsics_matrix(value["fx"], value["fy"], value["cx"], value["cy"], path, where)
    if value is None:
        raise SceneError(path, where, 'missing: give "intrinsics" per frame or once at the top level')
    k = finite_numbers(value, (3, 3), path, where)
    return intrinsics_matrix(k[0, 0], k[1, 1], k[0, 2], k[1, 2], path, where)


def capture_cam_to_world(pose: np.ndarray, convention: str, direction: str) -> np.ndarray:
    """An OpenCV camera-to-world matrix from a pose given in ``convention`` and ``direction``."""
    c2w = np.linalg.inv(pose) if direction == "world_to_cam" else pose
    return c2w @ OPENGL_TO_OPENCV if convention == "opengl" else c2w


def import_capture(points: str | Path, images: str | Path, poses: str | Path, out: str | Path, *,
                   convention: str | None = None, pose_direction: str | None = None, scale: float = 1.0,
                   up: str = "keep", frame_step: int = 1, acquisition: str = "unknown",
                   estimate_normals: bool = False) -> CaptureReport:
    """Import a point file + a directory of images + a poses file as one scene (see module doc);
    ``acquisition`` says what made the points (nothing in the files does)."""
    points, images, poses, out = Path(points), Path(images), Path(poses), Path(out)
    if not images.is_dir():
        raise DitrError(f"{images}: image directory does not exist")
    if frame_step < 1:
        raise DitrError(f"--frame-step must be >= 1, got {frame_step}")
    entries, declared = read_poses(poses)
    convention = convention or declared.get("convention", "opencv")
    direction = pose_direction or declared.get("pose_direction", "cam_to_world")
    if convention not in CONVENTIONS:
        raise SceneError(poses, "convention", f"must be one of {CONVENTIONS}, got {convention!r}")
    if direction not in POSE_DIRECTIONS:
        raise SceneError(poses, "pose_direction", f"must be one of {POSE_DIRECTIONS}, got {direction!r}")
    if not entries:
        raise SceneError(poses, None, "holds no poses")
    report = CaptureReport()
    views = []
    for entry in sorted(entries, key=lambda e: e.image)[::frame_step]:
        image = images / entry.image
        if not image.is_file():
            report.skipped_missing_image += 1
            continue
        width, height = image_size(image, f"{poses.name} {entry.where}")
        views.append(View(name=view_name(entry.image), width=width, height=height, intrinsics=entry.intrinsics,
                          cam_to_world=capture_cam_to_world(entry.pose, convention, direction), image_path=image))
    check_unique_names(views, poses)
    cloud = read_point_file(points)
    report.point_source = str(points)
    report.source = {"points": str(points), "images": str(images), "poses": str(poses), "convention": convention,
                     "pose_direction": direction}
    meta = {"dataset": "capture", "name": out.name, "source": report.source}
    assemble_scene(cloud, views, out, scale=scale, up=up, meta=meta, report=report, acquisition=acquisition,
                   estimate_normals=estimate_normals)
    return report
