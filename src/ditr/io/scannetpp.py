"""ScanNet++ importer: laser-scan meshes with annotations plus the undistorted DSLR images.

Source layout (the official download, after the toolkit's DSLR undistortion)::

    SRC/data/<scene>/scans/mesh_aligned_0.05.ply          mesh: vertices (xyz, rgb) + triangles
    SRC/data/<scene>/scans/segments.json                   segIndices per mesh vertex
    SRC/data/<scene>/scans/segments_anno.json              objects: segGroups (objectId, label, segments)
    SRC/data/<scene>/dslr/resized_undistorted_images/*.JPG (or undistorted_images/)
    SRC/data/<scene>/dslr/nerfstudio/transforms_undistorted.json
    SRC/data/<scene>/dslr/colmap/images.txt                optional: used to verify the poses
    SRC/splits/nvs_sem_train.txt, nvs_sem_val.txt          optional: written to OUT/splits/

``transforms_undistorted.json`` is nerfstudio's format: one pinhole camera (``fl_x``, ``fl_y``,
``cx``, ``cy``, ``w``, ``h``; the distortion coefficients zero after undistortion) and per frame a
camera-to-world ``transform_matrix`` with nerfstudio's OpenGL camera (x right, y up, z backwards).
Two conversions bring it to the scene format: the camera axes y and z are flipped (OpenCV: y down,
z forward), and the world axes are mapped back to the mesh's frame. ScanNet++ wrote these files with
nerfstudio's original COLMAP conversion, which swaps world x and y and negates z; a file recording
the world change it applied (nerfstudio's ``applied_transform``) is undone with that matrix instead.
Where ``dslr/colmap/images.txt`` is present, every converted pose is checked against COLMAP's
(OpenCV, mesh frame) pose of the same image, so a wrong convention is an error, not a silent
misprojection.

The iPhone stream (``iphone/rgb.mp4`` with ARKit poses) is not imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DitrError, SceneError
from ..scene import Scene, View
from .capture import OPENGL_TO_OPENCV, pose_from_quaternion, rigid_pose
from .colmap import read_images_text
from .common import Progress, check_sampling, read_json_object
from .scannet_raw import (import_scenes, per_vertex, read_mesh_points, read_object_groups, read_segments,
                          save_scene, select_scenes, vertex_groups)
from .splits import write_listed_splits

IMAGE_DIRS = ("resized_undistorted_images", "undistorted_images")
TRANSFORMS = Path("dslr") / "nerfstudio" / "transforms_undistorted.json"
SPLIT_FILES = {"train": "nvs_sem_train.txt", "val": "nvs_sem_val.txt"}
#: World change of nerfstudio's original COLMAP export (swap x and y, negate z); its own inverse.
NERFSTUDIO_COLMAP_WORLD = np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1]])
_DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")
#: Largest disagreement with COLMAP's poses that is still rounding (metres, and rotation-matrix entries).
POSE_CHECK_TOLERANCE = 1e-3


@dataclass
class ScanNetppReport:
    """What a ScanNet++ import did; skipped and unusual input is counted here rather than hidden."""

    scenes: list[str] = field(default_factory=list)
    frames: int = 0
    skipped_bad_frames: int = 0
    scenes_without_frames: list[str] = field(default_factory=list)
    scenes_without_labels: list[str] = field(default_factory=list)
    labels_not_in_classes: list[str] = field(default_factory=list)
    segments_in_several_objects: int = 0
    poses_checked_against_colmap: int = 0
    skipped_existing: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- cameras
def nerfstudio_to_opencv(transform: np.ndarray, world: np.ndarray = NERFSTUDIO_COLMAP_WORLD) -> np.ndarray:
    """Camera-to-world of an OpenCV camera in the mesh frame, from a nerfstudio ``transform_matrix``.

    ``world`` maps mesh coordinates to nerfstudio world coordinates; its inverse brings the camera
    back into the mesh frame, and the right-hand flip turns the OpenGL camera axes into OpenCV's.
    """
    return np.linalg.inv(world) @ transform @ OPENGL_TO_OPENCV


def _number(doc: dict, frame: dict, key: str, file: Path, where: str) -> float:
    value = frame.get(key, doc.get(key))  # nerfstudio allows per-frame intrinsics
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SceneError(file, f"{where}.{key}" if key in frame else key, f"must be a number, got {value!r}")
    return float(value)


def _pinhole(doc: dict, frame: dict, file: Path, where: str) -> tuple[np.ndarray, int, int]:
    """Intrinsics and image size; only undistorted (pinhole) cameras can be projected exactly."""
    model = frame.get("camera_model", doc.get("camera_model", "PINHOLE"))
    distortion = {k: frame.get(k, doc.get(k, 0.0)) for k in _DISTORTION}
    if model != "PINHOLE" and any(v not in (0, 0.0, None) for v in distortion.values()):
        raise SceneError(file, "camera_model", f"{model} with distortion {distortion}: only undistorted images are "
                                               "supported (run the ScanNet++ toolkit's `python -m dslr.undistort`)")
    fx, fy, cx, cy = (_number(doc, frame, k, file, where) for k in ("fl_x", "fl_y", "cx", "cy"))
    w, h = (int(_number(doc, frame, k, file, where)) for k in ("w", "h"))
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]), w, h


def _world(doc: dict, file: Path) -> np.ndarray:
    if "applied_transform" not in doc:
        return NERFSTUDIO_COLMAP_WORLD
    return rigid_pose(doc["applied_transform"], file, "applied_transform")


def read_colmap_poses(path: Path) -> dict[str, np.ndarray]:
    """Camera-to-world (OpenCV) per image file name from COLMAP's ``images.txt`` (world-to-camera q, t)."""
    return {Path(im.name).name: np.linalg.inv(pose_from_quaternion(im.qvec, im.tvec, path, f"image {im.id}"))
            for im in read_images_text(path).values()}


def _check_against_colmap(views: list[View], colmap: dict[str, np.ndarray], file: Path, colmap_file: Path) -> int:
    checked = 0
    for view in views:
        ref = colmap.get(view.image_path.name)
        if ref is None:
            continue
        err = max(float(np.abs(view.cam_to_world[:3, 3] - ref[:3, 3]).max()),
                  float(np.abs(view.cam_to_world[:3, :3] - ref[:3, :3]).max()))
        if err > POSE_CHECK_TOLERANCE:
            raise SceneError(file, f"frames[{view.name}].transform_matrix",
                             f"converted pose differs from {colmap_file} by {err:.3g} (translation m / rotation); "
                             "the file does not follow the nerfstudio convention this importer expects")
        checked += 1
    return checked


def dslr_views(scene_dir: Path, *, frame_step: int, max_frames: int | None, image_dir: str | None,
               report: ScanNetppReport) -> list[View]:
    """Views of the undistorted DSLR images listed in ``transforms_undistorted.json`` (train and test frames)."""
    file = scene_dir / TRANSFORMS
    if not file.is_file():
        if (file.parent / "transforms.json").is_file():
            raise SceneError(file, None, "missing: only the fisheye transforms.json exists; run the ScanNet++ "
                                         "toolkit's `python -m dslr.undistort` first (ditr projects through pinhole "
                                         "cameras)")
        return []
    doc = read_json_object(file)
    images = _image_dir(scene_dir, image_dir)
    world = _world(doc, file)
    entries = [("frames", i, f) for i, f in enumerate(doc.get("frames", []))]
    entries += [("test_frames", i, f) for i, f in enumerate(doc.get("test_frames", []))]
    views: list[View] = []
    for key, i, frame in entries[::frame_step]:
        where = f"{key}[{i}]"
        if frame.get("is_bad", False):
            report.skipped_bad_frames += 1
            continue
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise SceneError(file, where, "needs file_path and transform_matrix")
        image = images / Path(frame["file_path"]).name
        if not image.is_file():
            raise SceneError(image, f"{where}.file_path", f"image missing (listed in {file})")
        k, w, h = _pinhole(doc, frame, file, where)
        with Image.open(image) as im:
            if im.size != (w, h):
                raise SceneError(image, f"{where}.image", f"is {im.size[0]}x{im.size[1]}, {file.name} declares {w}x{h}")
        transform = rigid_pose(frame["transform_matrix"], file, f"{where}.transform_matrix")
        views.append(View(name=image.stem, width=w, height=h, intrinsics=k,
                          cam_to_world=nerfstudio_to_opencv(transform, world), image_path=image))
        if max_frames is not None and len(views) >= max_frames:
            break
    colmap_file = scene_dir / "dslr" / "colmap" / "images.txt"
    if colmap_file.is_file():
        report.poses_checked_against_colmap += _check_against_colmap(views, read_colmap_poses(colmap_file),
                                                                     file, colmap_file)
    return views


def _image_dir(scene_dir: Path, name: str | None) -> Path:
    candidates = [name] if name else IMAGE_DIRS
    for candidate in candidates:
        if (scene_dir / "dslr" / candidate).is_dir():
            return scene_dir / "dslr" / candidate
    raise SceneError(scene_dir / "dslr", "images", f"no image folder {' or '.join(candidates)}")


# ---------------------------------------------------------------------------------------- scenes
def read_class_list(path: Path) -> list[str]:
    """A semantic class list, one name per line (ScanNet++'s ``metadata/semantic_benchmark/top100.txt``)."""
    if not path.is_file():
        raise DitrError(f"{path}: class list missing")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names or len(set(names)) != len(names):
        raise SceneError(path, None, "must list distinct class names, one per line")
    return names


def import_scannetpp_scene(scene_dir: Path, out_dir: Path, *, classes: Sequence[str] | None = None,
                           frame_step: int = 1, max_frames: int | None = None, image_dir: str | None = None,
                           report: ScanNetppReport | None = None) -> Scene:
    """Convert one ScanNet++ scene into a ditr scene directory at ``out_dir``."""
    report = report if report is not None else ScanNetppReport()
    check_sampling(frame_step, max_frames)
    name, scans = scene_dir.name, scene_dir / "scans"
    coord, attributes = read_mesh_points(scans / "mesh_aligned_0.05.ply")
    meta: dict = {"dataset": "scannetpp", "name": name, "ignore_index": -1, "acquisition": {"kind": "mesh"}}
    seg_file, anno_file = scans / "segments.json", scans / "segments_anno.json"
    if seg_file.is_file() and anno_file.is_file():
        groups = read_object_groups(anno_file)
        vertex_group, shared = vertex_groups(read_segments(seg_file, len(coord)), groups)
        report.segments_in_several_objects += shared
        attributes["instance"] = per_vertex(groups.object_ids, vertex_group)
        meta["instance_labels"] = {str(i): label for i, label in zip(groups.object_ids.tolist(), groups.labels)}
        if classes is not None:
            index = {c: i for i, c in enumerate(classes)}
            attributes["segment"] = per_vertex([index.get(label, -1) for label in groups.labels], vertex_group)
            meta.update(segment="segment", class_names=list(classes))
            missing = {label for label in groups.labels if label not in index}
            report.labels_not_in_classes = sorted(set(report.labels_not_in_classes) | missing)
    else:
        report.scenes_without_labels.append(name)
    views = dslr_views(scene_dir, frame_step=frame_step, max_frames=max_frames, image_dir=image_dir, report=report)
    return save_scene(Scene(coord=coord, attributes=attributes, views=views, meta=meta), out_dir, name, report)


def find_scenes(src: Path) -> list[Path]:
    """Scene directories: SRC/data/* (the download layout), else SRC/*, or SRC itself."""
    def is_scene(p: Path) -> bool:
        return (p / "scans" / "mesh_aligned_0.05.ply").is_file()

    if is_scene(src):
        return [src]
    root = src / "data" if (src / "data").is_dir() else src
    return sorted((p for p in root.iterdir() if is_scene(p)), key=lambda p: p.name)


def import_scannetpp(src: str | Path, out: str | Path, *, classes: str | Path | None = None, frame_step: int = 1,
                     max_frames: int | None = None, image_dir: str | None = None,
                     scenes: Sequence[str] | None = None, skip_existing: bool = False,
                     progress: Progress | None = None) -> ScanNetppReport:
    """Import ScanNet++ scenes under ``src`` into ``out/<scene>`` (see the module docstring)."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DitrError(f"{src}: source directory does not exist")
    found = find_scenes(src)
    if not found:
        raise DitrError(f"{src}: no scenes found (expected SRC/data/<scene>/scans/mesh_aligned_0.05.ply)")
    todo = select_scenes(found, scenes, src)
    class_list = read_class_list(Path(classes)) if classes is not None else None
    report = ScanNetppReport()
    convert = partial(import_scannetpp_scene, classes=class_list, frame_step=frame_step, max_frames=max_frames,
                      image_dir=image_dir, report=report)
    import_scenes(todo, out, convert, skip_existing=skip_existing, skipped=report.skipped_existing, progress=progress)
    lists = {s: src / "splits" / f for s, f in SPLIT_FILES.items() if (src / "splits" / f).is_file()}
    report.splits = write_listed_splits(out, lists)
    return report
