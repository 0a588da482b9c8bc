"""S3DIS importer: annotated rooms from ``Stanford3dDataset_v1.2``, optionally with 2D-3D-S images.

Point source (the S3DIS download)::

    SRC/Area_N/<room>/Annotations/<class>_<k>.txt     one object per file: "x y z r g b" per line

Every annotation file is one instance; its class is the file name without ``_<k>``. The 13 classes
of the benchmark are :data:`S3DIS_CLASSES`; ``stairs`` (a handful of objects) is counted as
``clutter``, as the 13-class benchmark does, and any other unknown name gets -1 (ignore). Both are
counted in the report.

Images (the 2D-3D-S download, rgb/depth/pose folders of ``area_*/data`` only)::

    IMAGES/area_N/data/rgb/camera_<uuid>_<room>_frame_<j>_domain_rgb.png       1080 x 1080
    IMAGES/area_N/data/depth/camera_<uuid>_<room>_frame_<j>_domain_depth.png   uint16, 1/512 m, 65535 = none
    IMAGES/area_N/data/pose/camera_<uuid>_<room>_frame_<j>_domain_pose.json    camera_k_matrix, camera_rt_matrix

2D-3D-S splits area 5 in two captures, ``area_5a`` and ``area_5b``; both belong to S3DIS ``Area_5``,
and an Area_5 room takes the frames of both. Frames are assigned to rooms by the room name in their
file name. ``camera_rt_matrix`` is the world-to-camera ``[R | t]`` of an OpenCV camera (x right, y
down, z forward) in 2D-3D-S's global frame. That frame is the frame of the *non-aligned*
``Stanford3dDataset_v1.2`` download; the ``_Aligned_Version`` rotates every room about z into a
canonical orientation, so its points do not meet the cameras (see docs/datasets.md for the
evidence). Images therefore require the non-aligned version. ``area_5b`` is the exception: its
poses live in a frame of their own, and every ``area_5b`` extrinsic E becomes E . C with the fixed
rigid :data:`AREA_5B_CORRECTION` C (S3DIS coordinates -> area_5b coordinates), as the reference's
preprocessing does. Every frame's depth map is then checked against the room's points: frames whose
depth agrees with too few of the points they should see are dropped and counted, so that a wrong
pose shows up in the report instead of silently giving wrong features.

Output: ``OUT/Area_N/<room>/`` scenes with coord, color, normal (estimated by
:func:`ditr.normals.estimate_normals`, facing the room's centre), segment (13 classes), instance
and views with depth (``depth_scale`` 512, missing depth written as 0).
"""

from __future__ import annotations

import io
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DitrError, SceneError
from ..normals import DEFAULT_CELL, estimate_normals
from ..projection import ProjectionConfig, compute_correspondences
from ..scene import Scene, View
from .common import Progress, image_size, read_json_object, tracked

S3DIS_CLASSES = ["ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
                 "bookcase", "board", "clutter"]
#: Annotation names outside the 13 classes that the benchmark folds into one of them.
CLASS_ALIASES = {"stairs": "clutter"}

#: Maps S3DIS point coordinates into the coordinate frame of the ``area_5b`` capture: a 90 degree
#: rotation about z plus a shift. Every ``area_5b`` world-to-camera matrix E is used as E @ C (the
#: reference's fixed correction; docs/datasets.md#s3dis--2d-3d-s-images).
AREA_5B_CORRECTION = np.array([[0.0, -1.0, 0.0, 6.22617759],
                               [1.0, 0.0, 0.0, 4.09703582],
                               [0.0, 0.0, 1.0, 0.0],
                               [0.0, 0.0, 0.0, 1.0]])
#: The 2D-3D-S capture whose poses need :data:`AREA_5B_CORRECTION`.
AREA_5B = "area_5b"

DEPTH_SCALE = 512.0  # 2D-3D-S depth units per metre
DEPTH_MISSING = 65535
#: Files with more damaged lines than this fraction are errors, not something to repair.
MAX_DAMAGED_FRACTION = 0.01

_NUMERIC = np.zeros(256, bool)
_NUMERIC[list(b"0123456789.+-eE \t\r\n")] = True
_BLANK = np.zeros(256, bool)
_BLANK[list(b" \t\r\n")] = True
_AREA_DIR = re.compile(r"^area_(\d+)([ab]?)(?:_no_xyz)?$")
_FRAME_FILE = re.compile(r"^camera_([0-9a-f]+)_(.+)_frame_(\d+)_domain_rgb\.png$")


@dataclass
class S3DISReport:
    """What an S3DIS import did; everything skipped, repaired or relabelled is counted here."""

    scenes: list[str] = field(default_factory=list)
    points: int = 0
    frames: int = 0
    damaged_lines: list[str] = field(default_factory=list)  # "<file>:<line>" dropped while parsing
    relabelled_points: dict[str, int] = field(default_factory=dict)  # alias name -> points
    ignored_points: dict[str, int] = field(default_factory=dict)  # unknown class name -> points (-1)
    rooms_without_annotations: list[str] = field(default_factory=list)
    frames_dropped_low_agreement: int = 0
    frames_unmatched: int = 0  # 2D-3D-S frames whose room is not among the imported rooms
    unmatched_rooms: list[str] = field(default_factory=list)
    #: per 2D-3D-S area: frames checked, median depth agreement, frames below --min-agreement
    agreement_by_area: dict[str, dict] = field(default_factory=dict)
    #: area_5b frames read with the area_5b pose correction, kept, and dropped (reason: low agreement)
    area_5b_frames_corrected: int = 0
    area_5b_frames_kept: int = 0
    area_5b_frames_dropped_low_agreement: int = 0
    #: the same per room: "Area_5/<room>" -> {"corrected": n, "kept": n, "dropped_low_agreement": n}
    area_5b_frames_by_room: dict[str, dict[str, int]] = field(default_factory=dict)

    def count_area_5b(self, room: str, corrected: int, kept: int) -> None:
        """Count a room's area_5b frames: ``corrected`` read with the correction, ``kept`` of them."""
        if not corrected:
            return
        self.area_5b_frames_corrected += corrected
        self.area_5b_frames_kept += kept
        self.area_5b_frames_dropped_low_agreement += corrected - kept
        self.area_5b_frames_by_room[room] = {"corrected": corrected, "kept": kept,
                                             "dropped_low_agreement": corrected - kept}

    def summarise_agreement(self, agreements: dict[str, list[float]], minimum: float) -> None:
        for area, values in sorted(agreements.items()):
            v = np.asarray(values)
            self.agreement_by_area[area] = {"frames": len(v), "median": round(float(np.median(v)), 4),
                                            "below_min": int((v < minimum).sum())}


# ------------------------------------------------------------------------------------------ points
def read_point_text(path: Path, columns: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Read a whitespace table of numbers; returns (rows, 1-based numbers of the dropped lines).

    The fast path is numpy's C parser. A few S3DIS files carry a stray non-numeric byte inside a
    number (``103.0\\x100000``) or a broken line; such lines are dropped, never guessed at, and
    reported, so that one damaged byte costs one point instead of the room. A file with more than
    :data:`MAX_DAMAGED_FRACTION` damaged lines is an error: it needs downloading again.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SceneError(path, None, f"cannot be read ({exc.strerror})") from None
    if not raw.strip():
        return np.zeros((0, columns)), np.zeros(0, np.int64)
    try:
        data = np.loadtxt(io.BytesIO(raw), dtype=np.float64, ndmin=2)
        if data.shape[1] == columns and np.isfinite(data).all():
            return data, np.zeros(0, np.int64)
    except ValueError:
        pass
    return _parse_dropping_damaged_lines(raw, columns, path)


def _parse_dropping_damaged_lines(raw: bytes, columns: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised: drop lines holding a non-numeric byte or the wrong number of fields, parse the rest."""
    buf = np.frombuffer(raw if raw.endswith(b"\n") else raw + b"\n", np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    lengths = np.diff(ends, prepend=-1)
    damaged = np.zeros(len(ends), bool)
    damaged[np.searchsorted(ends, np.flatnonzero(~_NUMERIC[buf]))] = True
    blank = _BLANK[buf]
    token_starts = np.flatnonzero(~blank & np.concatenate([[True], blank[:-1]]))
    fields = np.bincount(np.searchsorted(ends, token_starts), minlength=len(ends))
    keep = ~damaged & (fields == columns)
    dropped = np.flatnonzero(~keep & (fields > 0)) + 1
    lines = int((fields > 0).sum())
    if dropped.size > MAX_DAMAGED_FRACTION * lines:
        raise SceneError(path, f"line {dropped[0]}", f"{dropped.size} of {lines} lines are not {columns} numbers; "
                         "the file is damaged beyond a stray byte (download it again)")
    text = buf[np.repeat(keep, lengths)].tobytes().decode("ascii")
    try:
        data = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2).reshape(-1, columns)
    except ValueError as exc:
        raise SceneError(path, None, f"cannot be parsed as {columns} numbers per line ({exc})") from None
    if not np.isfinite(data).all():  # only reachable through overflowing literals such as 1e999
        raise SceneError(path, None, "contains numbers too large for float64")
    return data, dropped


def _natural_key(p: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))


def _class_name(annotation: Path) -> str:
    stem = annotation.stem
    head, _, tail = stem.rpartition("_")
    return head if head and tail.isdigit() else stem


def read_room(room_dir: Path, report: S3DISReport, src: Path) -> tuple[np.ndarray, ...] | None:
    """coord (float64), color, segment, instance of one room from its annotation files, or None if it has none."""
    files = sorted((p for p in (room_dir / "Annotations").glob("*.txt") if not p.name.startswith(".")),
                   key=_natural_key)
    if not files:
        return None
    parts, segments, instances = [], [], []
    for index, file in enumerate(files):
        rows, dropped = read_point_text(file)
        report.damaged_lines += [f"{file.relative_to(src)}:{line}" for line in dropped.tolist()]
        name = _class_name(file)
        canonical = CLASS_ALIASES.get(name, name)
        if canonical != name:
            report.relabelled_points[name] = report.relabelled_points.get(name, 0) + len(rows)
        if canonical not in S3DIS_CLASSES:
            report.ignored_points[name] = report.ignored_points.get(name, 0) + len(rows)
        label = S3DIS_CLASSES.index(canonical) if canonical in S3DIS_CLASSES else -1
        parts.append(rows)
        segments.append(np.full(len(rows), label, np.int64))
        instances.append(np.full(len(rows), index, np.int64))
        rgb = rows[:, 3:6]
        if rgb.size and (rgb.min() < 0 or rgb.max() > 255):
            raise SceneError(file, "r g b", f"colours must lie in 0-255, found {rgb.min():g} .. {rgb.max():g}")
    data = np.concatenate(parts)
    if len(data) == 0:
        return None
    return data[:, :3], np.round(data[:, 3:6]).astype(np.uint8), np.concatenate(segments), np.concatenate(instances)


# ------------------------------------------------------------------------------------------ frames
@dataclass(frozen=True)
class Frame:
    """One 2D-3D-S perspective frame: where its files are and which S3DIS room it belongs to."""

    area: str  # 2D-3D-S area folder name (area_5a)
    room: str
    camera: str
    number: int
    rgb: Path

    def sibling(self, kind: str, suffix: str) -> Path:
        name = self.rgb.name[: -len("rgb.png")] + suffix
        return self.rgb.parent.parent / kind / name

    @property
    def name(self) -> str:
        return f"{self.camera}_frame_{self.number}"


def s3dis_area(area_dir_name: str) -> str | None:
    """S3DIS area of a 2D-3D-S area folder: ``area_5b`` -> ``Area_5``; None for other names."""
    m = _AREA_DIR.match(area_dir_name)
    return f"Area_{m.group(1)}" if m else None


def index_frames(images: Path) -> dict[tuple[str, str], list[Frame]]:
    """All perspective frames under a 2D-3D-S root (or one area folder), by (S3DIS area, room)."""
    if not images.is_dir():
        raise DitrError(f"{images}: 2D-3D-S directory does not exist")
    candidates = [images, *sorted(images.glob("*")), *sorted(images.glob("*/*"))]
    areas = [p for p in candidates if s3dis_area(p.name) and (p / "data" / "rgb").is_dir()]
    if not areas:
        raise DitrError(f"{images}: no 2D-3D-S area folders (expected area_N/data/rgb/, area_5a, area_5b ...)")
    frames: dict[tuple[str, str], list[Frame]] = {}
    for area in areas:
        for rgb in (area / "data" / "rgb").glob("*_domain_rgb.png"):
            m = _FRAME_FILE.match(rgb.name)
            if m is None:
                raise SceneError(rgb, "file name", "expected camera_<uuid>_<room>_frame_<j>_domain_rgb.png")
            frame = Frame(area.name.split("_no_xyz")[0], m.group(2), m.group(1), int(m.group(3)), rgb)
            frames.setdefault((s3dis_area(area.name), frame.room), []).append(frame)
    for group in frames.values():
        group.sort(key=lambda f: (f.camera, f.number))
    return frames


def read_pose(path: Path, correction: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics (3x3) and cam_to_world (4x4) from a 2D-3D-S pose JSON.

    ``correction`` (4x4, e.g. :data:`AREA_5B_CORRECTION`) right-multiplies the world-to-camera
    matrix: the camera then sees points given in the correction's source frame.
    """
    doc = read_json_object(path, "pose", "missing (every rgb frame needs its _domain_pose.json)")
    k = _json_matrix(doc, "camera_k_matrix", (3, 3), path)
    rt = _json_matrix(doc, "camera_rt_matrix", (3, 4), path)
    rot = rt[:3, :3]
    if np.abs(rot @ rot.T - np.eye(3)).max() > 1e-3 or np.linalg.det(rot) < 0:
        raise SceneError(path, "camera_rt_matrix", "its 3x3 part is not a rotation (orthonormal, det +1)")
    if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]):
        raise SceneError(path, "camera_k_matrix", f"is not a pinhole intrinsic matrix: {k.tolist()}")
    world_to_cam = np.eye(4)
    world_to_cam[:3] = rt[:3]
    if correction is not None:
        world_to_cam = world_to_cam @ correction
    return k, np.linalg.inv(world_to_cam)


def _json_matrix(doc: dict, key: str, shape: tuple[int, int], path: Path) -> np.ndarray:
    if key not in doc:
        raise SceneError(path, key, "missing")
    try:
        m = np.asarray(doc[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneError(path, key, f"must be a {shape[0]}x{shape[1]} matrix of numbers") from None
    if m.shape == (4, 4) and shape == (3, 4):
        m = m[:3]
    if m.shape != shape or not np.isfinite(m).all():
        raise SceneError(path, key, f"must be a finite {shape[0]}x{shape[1]} matrix, got shape {list(m.shape)}")
    return m


def read_frame(frame: Frame, depth_dir: Path, correct_area_5b: bool = True) -> tuple[View, np.ndarray]:
    """The frame as a View whose depth (missing values as 0) is written to ``depth_dir``; also the depth in metres.

    The pose of an ``area_5b`` frame gets :data:`AREA_5B_CORRECTION` unless ``correct_area_5b`` is False.
    """
    correction = AREA_5B_CORRECTION if correct_area_5b and frame.area == AREA_5B else None
    k, cam_to_world = read_pose(frame.sibling("pose", "pose.json"), correction)
    depth_file = frame.sibling("depth", "depth.png")
    if not depth_file.is_file():
        raise SceneError(depth_file, "depth", f"missing for frame {frame.rgb.name}")
    width, height = image_size(frame.rgb, "image")
    try:
        with Image.open(depth_file) as im:
            raw = np.asarray(im)
    except Exception as exc:  # PIL raises several types for damaged files
        raise SceneError(depth_file, "depth", f"cannot be decoded ({exc})") from None
    if raw.shape != (height, width):
        raise SceneError(depth_file, "depth", f"has shape {raw.shape}; expected one {height}x{width} channel "
                         "like the rgb image")
    units = np.where(raw == DEPTH_MISSING, 0, raw).astype(np.uint16)  # the scene format's "no depth" is 0
    converted = depth_dir / f"{frame.name}.png"
    Image.fromarray(units).save(converted, compress_level=1)  # zlib level 1: several times faster to encode
    depth = units.astype(np.float32) / DEPTH_SCALE
    view = View(name=frame.name, width=width, height=height, intrinsics=k, cam_to_world=cam_to_world,
                image_path=frame.rgb, depth_path=converted, depth_scale=DEPTH_SCALE)
    return view, depth


def depth_agreement(points: torch.Tensor, view: View, depth: np.ndarray, tolerance: float = 0.2) -> float:
    """Fraction of the points inside the view's frustum whose depth matches its depth map.

    With the right pose most of a room's points that fall into one of its frames are the surfaces
    the frame shows; with a wrong pose (another frame, a misregistered capture) almost none are.
    """
    corr = compute_correspondences(
        points, torch.from_numpy(view.world_to_cam)[None], torch.from_numpy(np.asarray(view.intrinsics))[None],
        torch.tensor([[view.height, view.width]]), ProjectionConfig(occlusion="depth", depth_tolerance=tolerance),
        depth_maps=[torch.from_numpy(depth)])
    in_frame = int(corr.in_frame.sum())
    return int(corr.visible.sum()) / in_frame if in_frame else 0.0


def _evenly(frames: list[Frame], max_frames: int | None) -> list[Frame]:
    if max_frames is None or len(frames) <= max_frames:
        return frames
    return [frames[i] for i in np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]


# ------------------------------------------------------------------------------------------ import
def import_room(room_dir: Path, out_dir: Path, frames: list[Frame], report: S3DISReport, src: Path, *,
                normals: bool = True, min_agreement: float = 0.1, agreement_points: int = 200_000,
                agreements: dict[str, list[float]] | None = None, correct_area_5b: bool = True) -> Scene | None:
    """Convert one S3DIS room (+ its 2D-3D-S frames) into a scene directory; None if it has no annotations.

    ``agreements`` collects every frame's depth agreement by 2D-3D-S area, for the report;
    ``correct_area_5b`` applies :data:`AREA_5B_CORRECTION` to the poses of ``area_5b`` frames.
    """
    agreements = agreements if agreements is not None else {}
    area, room = room_dir.parent.name, room_dir.name
    data = read_room(room_dir, report, src)
    if data is None:
        report.rooms_without_annotations.append(f"{area}/{room}")
        return None
    coord, color, segment, instance = data
    attributes = {"color": color, "segment": segment, "instance": instance}
    if normals:
        attributes["normal"] = estimate_normals(coord, DEFAULT_CELL)
    meta = {"dataset": "s3dis", "name": f"{area}_{room}", "area": area, "room": room,
            "class_names": S3DIS_CLASSES, "ignore_index": -1, "segment": "segment", "acquisition": {"kind": "rgbd"}}
    views: list[View] = []
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{room}.depth.") as tmp:
        if frames:
            stride = max(1, len(coord) // agreement_points)
            sample = torch.from_numpy(coord[::stride].astype(np.float32))
            corrected = kept = 0
            for frame in frames:
                view, depth = read_frame(frame, Path(tmp), correct_area_5b)
                agreement = depth_agreement(sample, view, depth)
                agreements.setdefault(frame.area, []).append(agreement)
                from_5b = correct_area_5b and frame.area == AREA_5B
                corrected += int(from_5b)
                if agreement < min_agreement:
                    report.frames_dropped_low_agreement += 1
                    continue
                kept += int(from_5b)
                views.append(view)
            report.count_area_5b(f"{area}/{room}", corrected, kept)
        scene = Scene(coord=coord.astype(np.float32), attributes=attributes, views=views, meta=meta)
        scene.save(out_dir)
    report.scenes.append(f"{area}/{room}")
    report.points += len(coord)
    report.frames += len(views)
    return scene


def find_rooms(src: Path, areas: Iterable[str] | None = None) -> list[Path]:
    """Room directories ``SRC/Area_N/<room>`` (SRC may also be one area), optionally of some areas only."""
    if not src.is_dir():
        raise DitrError(f"{src}: S3DIS directory does not exist")
    area_dirs = [src] if re.fullmatch(r"Area_\d+", src.name) else sorted(p for p in src.glob("Area_*") if p.is_dir())
    if not area_dirs:
        raise DitrError(f"{src}: no Area_N folders (expected Stanford3dDataset_v1.2/Area_1/<room>/Annotations/)")
    if areas is not None:
        wanted = set(areas)
        unknown = wanted - {p.name for p in area_dirs}
        if unknown:
            raise DitrError(f"{src}: no such area(s) {sorted(unknown)}; found {[p.name for p in area_dirs]}")
        area_dirs = [p for p in area_dirs if p.name in wanted]
    rooms = [room for area in area_dirs for room in sorted(area.iterdir(), key=_natural_key)
             if room.is_dir() and not room.name.startswith(".")]
    if not rooms:
        raise DitrError(f"{src}: no room folders in {[p.name for p in area_dirs]}")
    return rooms


def import_s3dis(src: str | Path, out: str | Path, *, images: str | Path | None = None,
                 areas: Iterable[str] | None = None, max_frames: int | None = None, min_agreement: float = 0.1,
                 normals: bool = True, correct_area_5b: bool = True, progress: Progress | None = None
                 ) -> S3DISReport:
    """Import every room under ``src`` into ``out/Area_N/<room>``, with the 2D-3D-S frames of ``images``.

    ``correct_area_5b=False`` reads ``area_5b`` poses as they are (only to check the correction:
    they then miss the points and fail the agreement check).
    """
    src, out = Path(src), Path(out)
    if max_frames is not None and max_frames < 1:
        raise DitrError(f"max_frames must be >= 1, got {max_frames}")
    if not 0.0 <= min_agreement <= 1.0:
        raise DitrError(f"min_agreement must lie in [0, 1], got {min_agreement}")
    if images is not None and "Aligned_Version" in str(src.resolve()):
        raise DitrError(f"{src}: the Aligned_Version rotates every room, so its points do not meet the 2D-3D-S "
                        "cameras; import Stanford3dDataset_v1.2 (not aligned) when using images")
    rooms = find_rooms(src, areas)
    frames = index_frames(Path(images)) if images is not None else {}
    root = src.parent if re.fullmatch(r"Area_\d+", src.name) else src
    report = S3DISReport()
    imported = {(r.parent.name, r.name) for r in rooms}
    for key, group in sorted(frames.items()):
        if key not in imported and key[0] in {area for area, _ in imported}:
            report.frames_unmatched += len(group)
            report.unmatched_rooms.append(f"{key[0]}/{key[1]}")
    agreements: dict[str, list[float]] = {}
    for room_dir in tracked(rooms, progress):
        area = room_dir.parent.name
        import_room(room_dir, out / area / room_dir.name, _evenly(frames.get((area, room_dir.name), []), max_frames),
                    report, root, normals=normals, min_agreement=min_agreement, agreements=agreements,
                    correct_area_5b=correct_area_5b)
    report.summarise_agreement(agreements, min_agreement)
    return report
