"""Structured3D importer: rooms rebuilt from their perspective renderings (for D-DITR pretraining).

Source layout (the dataset's ``Structured3D_perspective_full_*.zip`` files, extracted)::

    SRC/scene_<sceneID>/2D_rendering/<roomID>/perspective/full/<positionID>/
        rgb_rawlight.png    1280 x 720 RGB
        depth.png           uint16, millimetres, 0 = no reading (depth along the optical axis)
        semantic.png        uint8 NYUv2 40-class ids (0 = unlabelled)
        camera_pose.txt     vx vy vz tx ty tz ux uy uz xfov yfov 1

``camera_pose.txt`` holds the eye position (mm, world frame: z up), the viewing direction, the up
direction and the *half* fields of view in radians; the principal point is the image centre, so
``fx = (W / 2) / tan(xfov)`` and ``fy = (H / 2) / tan(yfov)``.

Structured3D releases no point clouds, so each room's points are made from its views: every depth
pixel is back-projected to the world (in metres), pixels on depth discontinuities are dropped
(the renderer blends foreground and background depth there, which makes "flying" points), normals
come from the depth map's own neighbours, and everything is merged on a voxel grid (mean position,
colour and normal; majority label). Labels are kept as NYU40 (``segment40``: id - 1) and mapped to
the ScanNet-20 benchmark classes by their NYU40 ids (``segment``), so that Structured3D and ScanNet
share one label space when distilled together. Output: one scene per room, ``OUT/<scene>_room_<id>``,
holding every perspective view with its depth and its per-pixel ScanNet-20 label image, and
``OUT/splits/{train,val,test}.txt`` after the dataset's split (scenes 0-2999, 3000-3249, 3250-3499).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DitrError, SceneError
from ..scene import COORD_FILE, Scene, View
from .common import Progress, tracked
from .scannet import SCANNET20_CLASSES
from .splits import write_split

#: NYU40 ids of the ScanNet-20 benchmark classes, in the order of SCANNET20_CLASSES.
SCANNET20_NYU40_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]
NYU40_TO_SCANNET20 = np.full(256, -1, np.int64)
NYU40_TO_SCANNET20[SCANNET20_NYU40_IDS] = np.arange(len(SCANNET20_NYU40_IDS))
NYU40_NAMES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "nightstand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop",
]
SPLITS = {"train": (0, 3000), "val": (3000, 3250), "test": (3250, 3500)}
DEPTH_SCALE = 1000.0  # millimetres
POSE_FIELDS = "vx vy vz tx ty tz ux uy uz xfov yfov 1"
_SCENE_DIR = re.compile(r"^scene_(\d+)$")


@dataclass
class Structured3DReport:
    """What a Structured3D import did; rooms and pixels left out are counted here."""

    scenes: list[str] = field(default_factory=list)
    points: int = 0
    views: int = 0
    pixels_backprojected: int = 0
    pixels_dropped_discontinuity: int = 0
    rooms_without_perspective: list[str] = field(default_factory=list)
    rooms_without_depth: list[str] = field(default_factory=list)  # views present, no usable depth pixel
    splits: dict[str, int] = field(default_factory=dict)


def read_camera_pose(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics (3x3) and OpenCV cam_to_world (4x4, metres) from a perspective ``camera_pose.txt``."""
    if not path.is_file():
        raise SceneError(path, "camera_pose", "missing")
    try:
        values = np.array([float(x) for x in path.read_text().split()], np.float64)
    except (ValueError, UnicodeDecodeError):
        raise SceneError(path, "camera_pose", f"is not a list of numbers ({POSE_FIELDS})") from None
    if values.size != 12:
        raise SceneError(path, "camera_pose", f"holds {values.size} numbers, expected 12: {POSE_FIELDS}")
    if not np.isfinite(values).all():
        raise SceneError(path, "camera_pose", "contains NaN or infinite values")
    eye, toward, up, (xfov, yfov) = values[0:3] / 1000.0, values[3:6], values[6:9], values[9:11]
    for name, half in (("xfov", xfov), ("yfov", yfov)):
        if not 0.0 < half < np.pi / 2:
            raise SceneError(path, name, f"half field of view must lie in (0, pi/2) radians, got {half}")
    if np.linalg.norm(toward) < 1e-9:
        raise SceneError(path, "tx ty tz", "the viewing direction is zero")
    forward = toward / np.linalg.norm(toward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-6 * max(np.linalg.norm(up), 1e-12):
        raise SceneError(path, "ux uy uz", "the up direction is zero or parallel to the viewing direction")
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(forward, right), forward, eye
    k = np.array([[width / 2 / np.tan(xfov), 0, width / 2], [0, height / 2 / np.tan(yfov), height / 2], [0, 0, 1]])
    return k, pose


def _read_array(path: Path, field_name: str, shape: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise SceneError(path, field_name, "missing")
    try:
        with Image.open(path) as im:
            array = np.asarray(im)
    except Exception as exc:  # PIL raises several types for damaged files
        raise SceneError(path, field_name, f"cannot be decoded ({exc})") from None
    if array.shape[:2] != shape:
        raise SceneError(path, field_name,
                         f"is {array.shape[1]}x{array.shape[0]}, the rgb image is {shape[1]}x{shape[0]}")
    return array


def discontinuities(depth: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels whose depth differs from a 4-neighbour's by more than ``threshold`` x the nearer of the two.

    Rendered depth at an object's silhouette mixes foreground and background; those pixels and
    their neighbours across the jump are the ones that would float between the two surfaces.
    """
    edge = np.zeros(depth.shape, bool)
    for axis in (0, 1):
        a = depth.take(range(depth.shape[axis] - 1), axis)
        b = depth.take(range(1, depth.shape[axis]), axis)
        jump = (a > 0) & (b > 0) & (np.abs(a - b) > threshold * np.minimum(a, b))
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= jump
        edge[tuple(hi)] |= jump
    return edge


def backproject(depth: np.ndarray, k: np.ndarray, cam_to_world: np.ndarray, edge_threshold: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """World points, world normals and the (H, W) mask of the pixels they came from; plus edge pixels dropped.

    A pixel is kept where it and its four neighbours have depth and it is on no discontinuity;
    its normal is the cross product of the central differences of the camera-frame points,
    turned to face the camera. The outermost pixel ring has no central difference and is left out.
    Camera-frame arithmetic is float32 (sub-millimetre within any room), gathered at kept pixels only.
    """
    h, w = depth.shape
    d = depth.astype(np.float32)
    cam = np.empty((h, w, 3), np.float32)
    cam[..., 0] = d * ((np.arange(w, dtype=np.float32) + 0.5 - np.float32(k[0, 2])) / np.float32(k[0, 0]))
    cam[..., 1] = d * ((np.arange(h, dtype=np.float32) + 0.5 - np.float32(k[1, 2])) / np.float32(k[1, 1]))[:, None]
    cam[..., 2] = d
    valid = d > 0
    edges = discontinuities(d, edge_threshold) if edge_threshold > 0 else np.zeros_like(valid)
    usable = valid & ~edges
    keep = np.zeros_like(valid)
    keep[1:-1, 1:-1] = (usable[1:-1, 1:-1] & usable[:-2, 1:-1] & usable[2:, 1:-1]
                        & usable[1:-1, :-2] & usable[1:-1, 2:])
    flat = cam.reshape(-1, 3)
    index = np.flatnonzero(keep)
    pts = np.take(flat, index, axis=0)
    du = np.take(flat, index + 1, axis=0) - np.take(flat, index - 1, axis=0)
    dv = np.take(flat, index + w, axis=0) - np.take(flat, index - w, axis=0)
    normal = np.stack([dv[:, 1] * du[:, 2] - dv[:, 2] * du[:, 1], dv[:, 2] * du[:, 0] - dv[:, 0] * du[:, 2],
                       dv[:, 0] * du[:, 1] - dv[:, 1] * du[:, 0]], 1)
    normal /= np.maximum(np.sqrt((normal * normal).sum(1, keepdims=True)), 1e-12)
    normal[(normal * pts).sum(1) > 0] *= -1  # face the camera
    rot, t = cam_to_world[:3, :3].astype(np.float32), cam_to_world[:3, 3].astype(np.float32)
    # einsum, not matmul: numpy's (N, 3) @ (3, 3) takes a slow generic path, 5-10x slower here
    return (np.einsum("ij,kj->ik", pts, rot) + t, np.einsum("ij,kj->ik", normal, rot), keep,
            int((valid & edges).sum()))


def voxel_merge(coord: np.ndarray, color: np.ndarray, normal: np.ndarray, label: np.ndarray, voxel: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One point per occupied voxel: mean position, colour and normal, and the majority label.

    Ties between labels go to the smaller id. ``label`` holds ids >= -1.
    """
    cells = np.floor((coord - coord.min(0)) / voxel).astype(np.int64)
    dims = cells.max(0) + 1
    flat = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    m = len(counts)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(inverse, values[:, c], m) for c in range(values.shape[1])], 1) / counts[:, None]

    merged_normal = mean(normal)
    merged_normal /= np.maximum(np.linalg.norm(merged_normal, axis=1, keepdims=True), 1e-12)
    span = int(label.max()) + 2  # ids -1 .. max, one column each
    votes = np.bincount(inverse * span + (label + 1), minlength=m * span).reshape(m, span)
    majority = votes.argmax(1) - 1  # argmax takes the first of tied columns: the smaller id
    return (mean(coord), np.round(mean(color.astype(np.float64))).astype(np.uint8),
            merged_normal.astype(np.float32), majority.astype(np.int64))


def _position_key(p: Path) -> tuple:
    return (0, int(p.name)) if p.name.isdigit() else (1, p.name)


def read_position(position: Path, edge_threshold: float) -> tuple[View, dict[str, np.ndarray], int]:
    """One perspective view: its View (label image in ScanNet-20 ids) and its back-projected pixels.

    Returns the view, the pixels' ``coord``, ``normal``, ``color`` and ``label`` (NYU40 id - 1) and
    how many pixels were dropped on depth discontinuities.
    """
    rgb_file = position / "rgb_rawlight.png"
    if not rgb_file.is_file():
        raise SceneError(rgb_file, "image", "missing")
    try:
        with Image.open(rgb_file) as im:
            rgb = np.asarray(im.convert("RGB"))
    except Exception as exc:  # PIL raises several types for damaged files
        raise SceneError(rgb_file, "image", f"cannot be decoded ({exc})") from None
    shape = rgb.shape[:2]
    k, pose = read_camera_pose(position / "camera_pose.txt", shape[1], shape[0])
    depth = _read_array(position / "depth.png", "depth", shape).astype(np.float32) / DEPTH_SCALE
    nyu40 = _read_array(position / "semantic.png", "semantic", shape).astype(np.int64)
    if nyu40.ndim != 2:
        raise SceneError(position / "semantic.png", "semantic",
                         f"has {nyu40.shape[2]} channels; expected one channel of NYU40 ids")
    if nyu40.max() > 40:
        raise SceneError(position / "semantic.png", "semantic", f"holds id {nyu40.max()}; NYU40 ids are 0-40")
    coord, normal, keep, dropped = backproject(depth, k, pose, edge_threshold)
    view = View(name=position.name, width=shape[1], height=shape[0], intrinsics=k, cam_to_world=pose,
                image_path=rgb_file, depth_path=position / "depth.png", depth_scale=DEPTH_SCALE,
                label=NYU40_TO_SCANNET20[nyu40])
    return view, {"coord": coord, "normal": normal, "color": rgb[keep], "label": nyu40[keep] - 1}, dropped


def import_room(room_dir: Path, out_dir: Path, report: Structured3DReport, *, voxel_size: float = 0.02,
                edge_threshold: float = 0.05) -> Scene | None:
    """Rebuild one room from its perspective views into a scene directory; None (counted) if it has none."""
    name = f"{room_dir.parent.parent.name}_room_{room_dir.name}"
    positions = sorted((p for p in (room_dir / "perspective" / "full").glob("*") if p.is_dir()), key=_position_key)
    if not positions:
        report.rooms_without_perspective.append(name)
        return None
    views, parts = [], []
    for position in positions:
        view, pixels, dropped = read_position(position, edge_threshold)
        views.append(view)
        parts.append(pixels)
        report.pixels_backprojected += len(pixels["coord"])
        report.pixels_dropped_discontinuity += dropped
    pixels = {key: np.concatenate([p[key] for p in parts]) for key in ("coord", "color", "normal", "label")}
    if len(pixels["coord"]) == 0:
        report.rooms_without_depth.append(name)
        return None
    coord, color, normal, segment40 = voxel_merge(pixels["coord"], pixels["color"], pixels["normal"],
                                                  pixels["label"], voxel_size)
    segment = np.where(segment40 >= 0, NYU40_TO_SCANNET20[segment40 + 1], -1)
    meta = {"dataset": "structured3d", "name": name, "class_names": SCANNET20_CLASSES, "ignore_index": -1,
            "segment": "segment", "segment40_class_names": NYU40_NAMES, "acquisition": {"kind": "rgbd"}}
    scene = Scene(coord=coord.astype(np.float32), views=views, meta=meta,
                  attributes={"color": color, "normal": normal, "segment": segment, "segment40": segment40})
    scene.save(out_dir)
    report.scenes.append(name)
    report.points += len(coord)
    report.views += len(views)
    return scene


def find_rooms(src: Path, scenes: Iterable[str] | None = None) -> list[Path]:
    """Room folders ``SRC/scene_*/2D_rendering/<roomID>`` (SRC may also be a parent of ``Structured3D/``)."""
    if not src.is_dir():
        raise DitrError(f"{src}: Structured3D directory does not exist")
    if (src / "Structured3D").is_dir() and not any(src.glob("scene_*")):
        src = src / "Structured3D"
    scene_dirs = ([src] if _SCENE_DIR.match(src.name)
                  else sorted(p for p in src.glob("scene_*") if _SCENE_DIR.match(p.name)))
    if scenes is not None:
        wanted = set(scenes)
        scene_dirs = [p for p in scene_dirs if p.name in wanted]
        missing = wanted - {p.name for p in scene_dirs}
        if missing:
            raise DitrError(f"{src}: no such scene(s) {sorted(missing)}")
    if not scene_dirs:
        raise DitrError(f"{src}: no scene_XXXXX folders "
                        "(expected SRC/scene_00000/2D_rendering/<room>/perspective/full/)")
    return [room for scene in scene_dirs for room in sorted((scene / "2D_rendering").glob("*"), key=_position_key)
            if room.is_dir()]


def write_splits(out: Path) -> dict[str, int]:
    """``OUT/splits/<split>.txt`` from every room scene under OUT, by the dataset's scene-number ranges."""
    names = sorted(p.name for p in out.glob("scene_*_room_*") if (p / COORD_FILE).is_file())
    return {split: write_split(out, split, [n for n in names if lo <= int(n.split("_")[1]) < hi])
            for split, (lo, hi) in SPLITS.items()}


def import_structured3d(src: str | Path, out: str | Path, *, scenes: Iterable[str] | None = None,
                        voxel_size: float = 0.02, edge_threshold: float = 0.05,
                        progress: Progress | None = None) -> Structured3DReport:
    """Import every room with perspective renderings under ``src`` into ``out``; (re)write the split files."""
    src, out = Path(src), Path(out)
    if voxel_size <= 0:
        raise DitrError(f"voxel_size must be > 0, got {voxel_size}")
    if edge_threshold < 0:
        raise DitrError(f"edge_threshold must be >= 0 (0 keeps every pixel), got {edge_threshold}")
    rooms = find_rooms(src, scenes)
    report = Structured3DReport()
    for room in tracked(rooms, progress):
        name = f"{room.parent.parent.name}_room_{room.name}"
        import_room(room, out / name, report, voxel_size=voxel_size, edge_threshold=edge_threshold)
    report.splits = write_splits(out)
    return report
