"""KITTI LiDAR importers: SemanticKITTI sequences (+ KITTI odometry ``image_2``) and the KITTI object layout.

SemanticKITTI source layout (the dataset's own, as unpacked from semantic-kitti.org and KITTI odometry)::

    SRC/sequences/NN/velodyne/FFFFFF.bin   float32 (N, 4): x, y, z, remission in the Velodyne frame
    SRC/sequences/NN/labels/FFFFFF.label   uint32 (N,): low 16 bits raw semantic id, high 16 instance id
    SRC/sequences/NN/calib.txt             "P2: 12 numbers", "Tr: 12 numbers" (Velodyne -> camera 0)
    SRC/sequences/NN/image_2/FFFFFF.png    optional: KITTI odometry colour images, already rectified

KITTI object (3D detection) layout::

    SRC/training/velodyne/FFFFFF.bin
    SRC/training/image_2/FFFFFF.png
    SRC/training/calib/FFFFFF.txt          P0-P3, R0_rect, Tr_velo_to_cam (and Tr_imu_to_velo, unused)

Every frame becomes one scene whose points stay in the Velodyne frame. KITTI's projection matrices
are rectified, ``P = K [I | t]``, where ``t`` places the camera relative to the rectified camera 0
(for camera 2 about 6 cm to the side): the importers keep that translation and, for the object
layout, the rectifying rotation ``R0_rect``, so that ``K @ world_to_cam`` equals ``P @ R0 @ Tr``
exactly instead of approximately.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DitrError, SceneError
from ..scene import COORD_FILE, Scene, View
from .common import Progress, check_sampling, image_size, tracked
from .splits import write_split

#: SemanticKITTI's 19 evaluated classes, in the order of ``configs/semantickitti.yaml``.
SEMANTICKITTI_CLASSES = [
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist",
    "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk",
    "terrain", "pole", "traffic-sign",
]

#: The benchmark's learning map (dataset metadata): raw semantic id -> evaluated class, None = ignored.
#: Moving objects count as their static class, bus and on-rails as other-vehicle, lane markings as road.
SEMANTICKITTI_LEARNING_MAP: dict[int, str | None] = {
    0: None, 1: None,  # unlabeled, outlier
    10: "car", 11: "bicycle", 13: "other-vehicle", 15: "motorcycle", 16: "other-vehicle",  # 13 bus, 16 on-rails
    18: "truck", 20: "other-vehicle",
    30: "person", 31: "bicyclist", 32: "motorcyclist",
    40: "road", 44: "parking", 48: "sidewalk", 49: "other-ground",
    50: "building", 51: "fence", 52: None,  # other-structure
    60: "road",  # lane-marking
    70: "vegetation", 71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign", 99: None,  # other-object
    252: "car", 253: "bicyclist", 254: "person", 255: "motorcyclist",  # moving-*
    # moving on-rails, bus, truck, other
    256: "other-vehicle", 257: "other-vehicle", 258: "truck", 259: "other-vehicle",
}

#: The benchmark's sequence split; 11-21 come without labels.
SEMANTICKITTI_SPLITS: dict[str, tuple[int, ...]] = {
    "train": (0, 1, 2, 3, 4, 5, 6, 7, 9, 10), "val": (8,), "test": tuple(range(11, 22)),
}

_UNKNOWN = -2  # marks raw ids outside the learning map in the lookup table; counted, then ignored
_SCENE_NAME = re.compile(r"^(\d{2})_(\d{6})$")


@dataclass
class KittiImportReport:
    """What a KITTI object import did; frames without an image are counted rather than hidden."""

    scenes: int = 0
    views: int = 0
    frames_without_image: int = 0
    seconds_per_frame: float = 0.0


@dataclass
class SemanticKittiImportReport(KittiImportReport):
    """A SemanticKITTI import: also unlabelled frames, unknown raw ids, split sizes."""

    sequences: list[str] = field(default_factory=list)
    frames_without_labels: int = 0
    unknown_label_points: int = 0
    splits: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ files
def read_velodyne(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) float32 and remission (N,) float32 of a KITTI ``.bin`` scan."""
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size == 0:
        raise SceneError(path, "points", "the scan is empty")
    if raw.size % 4:
        raise SceneError(path, "points", f"holds {raw.size} float32 values, not a multiple of 4 "
                                         "(x, y, z, remission per point): the file is truncated or not a KITTI scan")
    points = raw.reshape(-1, 4)
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise SceneError(path, "points", f"{int(bad.sum())} points have NaN or infinite values "
                                         f"(first: point {int(np.flatnonzero(bad)[0])})")
    return np.ascontiguousarray(points[:, :3]), np.ascontiguousarray(points[:, 3])


def _learning_lut() -> np.ndarray:
    """Lookup table raw id (0..65535) -> class index, -1 ignore, ``_UNKNOWN`` outside the map."""
    lut = np.full(1 << 16, _UNKNOWN, dtype=np.int64)
    index = {name: i for i, name in enumerate(SEMANTICKITTI_CLASSES)}
    for raw, name in SEMANTICKITTI_LEARNING_MAP.items():
        lut[raw] = -1 if name is None else index[name]
    return lut


_LUT = _learning_lut()


def read_semantic_labels(path: Path, num_points: int) -> tuple[np.ndarray, np.ndarray, int]:
    """19-class segment, instance (-1 = none) and the number of raw ids outside the learning map.

    Points with unknown raw ids are ignored (-1) and counted, so a file from a newer label set is
    reported instead of failing or silently mislabelled.
    """
    raw = np.fromfile(path, dtype=np.uint32)
    if raw.size != num_points:
        raise SceneError(path, "labels", f"holds {raw.size} labels for a scan of {num_points} points "
                                         f"(file size {path.stat().st_size} bytes, 4 per label)")
    segment = _LUT[raw & 0xFFFF]
    unknown = segment == _UNKNOWN
    segment[unknown] = -1
    instance = (raw >> 16).astype(np.int64)
    instance[instance == 0] = -1  # 0: the point belongs to no instance (stuff classes)
    return segment, instance, int(unknown.sum())


def read_calib(path: Path) -> dict[str, np.ndarray]:
    """A KITTI calibration file: one ``KEY: numbers`` line per matrix (blank lines allowed)."""
    if not path.is_file():
        raise SceneError(path, None, "calibration file missing")
    calib = {}
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise SceneError(path, f"line {i}", f"expected 'KEY: numbers', got {line.strip()[:40]!r}")
        try:
            calib[key.strip()] = np.array(rest.split(), dtype=np.float64)
        except ValueError:
            raise SceneError(path, key.strip(), "holds values that are not numbers") from None
    return calib


def calib_matrix(calib: dict[str, np.ndarray], path: Path, key: str, rows: int, cols: int) -> np.ndarray:
    """``calib[key]`` as a rows x cols matrix; errors name the file and the key."""
    if key not in calib:
        raise SceneError(path, key, f"missing (the file has {', '.join(calib) or 'no entries'})")
    values = calib[key]
    if values.size != rows * cols:
        raise SceneError(path, key, f"holds {values.size} numbers, expected {rows}x{cols} = {rows * cols}")
    if not np.isfinite(values).all():
        raise SceneError(path, key, "contains NaN or infinite values")
    return values.reshape(rows, cols)


def _homogeneous(m: np.ndarray) -> np.ndarray:
    """A 3x3 rotation or 3x4 transform as 4x4."""
    out = np.eye(4)
    out[:3, : m.shape[1]] = m
    return out


def rectified_camera(p: np.ndarray, to_rect: np.ndarray, path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV intrinsics and cam_to_world of a camera with projection ``P @ to_rect``.

    KITTI's ``P = K [I | t]`` (``t = K^-1 P[:, 3]``, camera i's offset from the rectified camera 0),
    so ``P @ to_rect = K @ (T(t) @ to_rect)[:3]`` and world_to_cam is ``T(t) @ to_rect``.
    """
    k = p[:, :3]
    if k[1, 0] != 0 or np.any(k[2, :2] != 0) or not np.isclose(k[2, 2], 1.0) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise SceneError(path, key, f"is not a rectified projection K [I | t] (its left 3x3 must be upper "
                                    f"triangular with positive focal lengths and last row 0 0 1): {k.tolist()}")
    shift = np.eye(4)
    shift[:3, 3] = np.linalg.solve(k, p[:, 3])
    world_to_cam = shift @ to_rect
    rot = world_to_cam[:3, :3]
    if abs(np.linalg.det(rot)) < 1e-6:
        raise SceneError(path, key, "the Velodyne-to-camera chain is not invertible")
    cam_to_world = np.eye(4)
    cam_to_world[:3, :3] = np.linalg.inv(rot)
    cam_to_world[:3, 3] = -cam_to_world[:3, :3] @ world_to_cam[:3, 3]
    return k.copy(), cam_to_world


def odometry_camera(calib_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Camera 2 of a SemanticKITTI / KITTI odometry ``calib.txt``: (K, cam_to_world in the Velodyne frame).

    The odometry images are already rectified, so there is no ``R0_rect``: ``Tr`` maps Velodyne
    points into the rectified camera 0 and ``P2`` projects from there.
    """
    calib = read_calib(calib_path)
    p2 = calib_matrix(calib, calib_path, "P2", 3, 4)
    tr = _homogeneous(calib_matrix(calib, calib_path, "Tr", 3, 4))
    return rectified_camera(p2, tr, calib_path, "P2")


def object_camera(calib_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Camera 2 of a KITTI object ``calib/FFFFFF.txt``: projection ``P2 @ R0_rect @ Tr_velo_to_cam``."""
    calib = read_calib(calib_path)
    p2 = calib_matrix(calib, calib_path, "P2", 3, 4)
    r0 = _homogeneous(calib_matrix(calib, calib_path, "R0_rect", 3, 3))
    tr = _homogeneous(calib_matrix(calib, calib_path, "Tr_velo_to_cam", 3, 4))
    return rectified_camera(p2, r0 @ tr, calib_path, "P2")


def _image_view(image: Path, camera: tuple[np.ndarray, np.ndarray]) -> View:
    width, height = image_size(image, "image")
    k, cam_to_world = camera
    return View(name="image_2", width=width, height=height, intrinsics=k, cam_to_world=cam_to_world,
                image_path=image)


# ------------------------------------------------------------------------------------------ frames
def _frames(velodyne_dir: Path, frame_step: int, max_frames: int | None) -> list[Path]:
    frames = sorted(velodyne_dir.glob("*.bin"))[::frame_step]
    return frames[:max_frames] if max_frames is not None else frames


def _run_frames(jobs: Sequence[tuple], convert: Callable[..., None], report: KittiImportReport,
                progress: Progress | None) -> None:
    """``convert(*job, report)`` for every job, reporting progress and the mean time per frame."""
    start = time.perf_counter()
    for job in tracked(jobs, progress):
        convert(*job, report)
    report.seconds_per_frame = round((time.perf_counter() - start) / max(len(jobs), 1), 4)


# ------------------------------------------------------------------------------------- SemanticKITTI
def _sequences_dir(src: Path, content: str) -> Path:
    """``src/sequences`` or ``src`` itself, whichever holds ``NN/<content>`` directories."""
    for candidate in (src / "sequences", src):
        if candidate.is_dir() and any(candidate.glob(f"[0-9][0-9]/{content}")):
            return candidate
    raise DitrError(f"{src}: no sequences found (expected {src}/sequences/NN/{content}/)")


def import_semantickitti(src: str | Path, out: str | Path, *, sequences: Iterable[str] | None = None,
                         images: str | Path | None = None, frame_step: int = 1, max_frames: int | None = None,
                         progress: Progress | None = None) -> SemanticKittiImportReport:
    """Import SemanticKITTI frames into ``OUT/<seq>_<frame>/``, then write the split lists.

    ``images`` is the KITTI odometry root holding ``sequences/NN/image_2`` when it was unpacked
    apart from SemanticKITTI (default: ``src``). ``max_frames`` applies per sequence. No class
    weights are computed: the ``semantickitti`` preset carries the reference's fixed
    ``loss.class_weights``.
    """
    src, out = Path(src), Path(out)
    check_sampling(frame_step, max_frames)
    seq_root = _sequences_dir(src, "velodyne")
    image_root = _sequences_dir(Path(images), "image_2") if images is not None else seq_root
    found = sorted(p.parent.name for p in seq_root.glob("[0-9][0-9]/velodyne"))
    names = (f"{int(s):02d}" if str(s).isdigit() else str(s) for s in sequences or found)
    wanted = list(dict.fromkeys(names))
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise DitrError(f"{seq_root}: sequences {', '.join(missing)} not found (present: {', '.join(found)})")
    report = SemanticKittiImportReport(sequences=wanted)
    jobs = []
    for seq in wanted:
        image_dir = image_root / seq / "image_2"
        camera = odometry_camera(seq_root / seq / "calib.txt") if image_dir.is_dir() else None
        labels_dir = seq_root / seq / "labels"
        for scan in _frames(seq_root / seq / "velodyne", frame_step, max_frames):
            jobs.append((seq, scan, image_dir / f"{scan.stem}.png", camera,
                         labels_dir / f"{scan.stem}.label" if labels_dir.is_dir() else None, out))
    _run_frames(jobs, _semantickitti_frame, report, progress)
    report.splits = write_splits(out)
    return report


def _semantickitti_frame(seq: str, scan: Path, image: Path, camera: tuple[np.ndarray, np.ndarray] | None,
                         label_file: Path | None, out: Path, report: SemanticKittiImportReport) -> None:
    coord, strength = read_velodyne(scan)
    name = f"{seq}_{scan.stem}"
    attributes = {"strength": strength}
    meta = {"dataset": "semantickitti", "name": name, "sequence": seq, "frame": scan.stem,
            "class_names": SEMANTICKITTI_CLASSES, "ignore_index": -1, "acquisition": {"kind": "lidar"}}
    if label_file is None:
        report.frames_without_labels += 1
    else:
        if not label_file.is_file():
            raise SceneError(label_file, "labels",
                             f"missing for scan {scan.name} (the sequence has a labels/ directory)")
        segment, instance, unknown = read_semantic_labels(label_file, len(coord))
        attributes.update(segment=segment, instance=instance)
        meta["segment"] = "segment"
        report.unknown_label_points += unknown
    views = []
    if camera is not None and image.is_file():
        views.append(_image_view(image, camera))
    else:
        report.frames_without_image += 1
    Scene(coord=coord, attributes=attributes, views=views, meta=meta).save(out / name)
    report.scenes += 1
    report.views += len(views)


def write_splits(out: Path) -> dict[str, int]:
    """``OUT/splits/{train,val,test}.txt`` listing the ``<seq>_<frame>`` scenes present in ``out``.

    The lists cover every scene in ``out``, so sequences imported by separate runs add up. Empty
    splits are not written (an empty list would make training fail later with a less clear error).
    """
    by_seq: dict[int, list[str]] = {}
    for p in sorted(out.iterdir()) if out.is_dir() else []:
        m = _SCENE_NAME.match(p.name)
        if m and (p / COORD_FILE).is_file():
            by_seq.setdefault(int(m.group(1)), []).append(p.name)
    return {split: write_split(out, split, [n for s in seqs for n in by_seq.get(s, [])])
            for split, seqs in SEMANTICKITTI_SPLITS.items()}


# ----------------------------------------------------------------------------------- KITTI object
def _object_split_dir(src: Path, split: str) -> Path:
    for candidate in (src / split, src):
        if (candidate / "velodyne").is_dir():
            return candidate
    raise DitrError(f"{src}: no velodyne/ directory (expected SRC/{split}/velodyne/*.bin with image_2/ and calib/)")


def import_kitti_object(src: str | Path, out: str | Path, *, split: str = "training", frame_step: int = 1,
                        max_frames: int | None = None, progress: Progress | None = None) -> KittiImportReport:
    """Import KITTI object frames into ``OUT/<frame>/``: points + remission and the image_2 view, no labels.

    KITTI's object labels are 3D boxes, not per-point classes, so the scenes carry no segment.
    """
    src, out = Path(src), Path(out)
    check_sampling(frame_step, max_frames)
    root = _object_split_dir(src, split)
    scans = _frames(root / "velodyne", frame_step, max_frames)
    if not scans:
        raise DitrError(f"{root / 'velodyne'}: no .bin scans")
    report = KittiImportReport()
    _run_frames([(scan, root, out) for scan in scans], _object_frame, report, progress)
    return report


def _object_frame(scan: Path, root: Path, out: Path, report: KittiImportReport) -> None:
    coord, strength = read_velodyne(scan)
    image = root / "image_2" / f"{scan.stem}.png"
    views = []
    if image.is_file():
        views.append(_image_view(image, object_camera(root / "calib" / f"{scan.stem}.txt")))
    else:
        report.frames_without_image += 1
    meta = {"dataset": "kitti", "name": scan.stem, "acquisition": {"kind": "lidar"}}
    Scene(coord=coord, attributes={"strength": strength}, views=views, meta=meta).save(out / scan.stem)
    report.scenes += 1
    report.views += len(views)
