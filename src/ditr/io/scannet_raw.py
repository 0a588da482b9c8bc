"""ScanNet / ScanNet200 importer from the raw scans, reading the ``.sens`` streams directly.

Source layout (the official download, ``download-scannet.py``)::

    SRC/scannetv2-labels.combined.tsv                  label table (raw_category -> id, nyu40id)
    SRC/scans/<scene>/<scene>.sens                     RGB-D stream with poses and calibration
    SRC/scans/<scene>/<scene>_vh_clean_2.ply           mesh: vertices (xyz, rgb) + triangles
    SRC/scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json   over-segmentation: segIndices per vertex
    SRC/scans/<scene>/<scene>.aggregation.json          objects: segGroups (objectId, label, segments)
    SRC/scans/<scene>/<scene>.txt                       metadata, incl. ``axisAlignment = ...``
    SRC/scans_test/<scene>/...                          test scenes: no segs / aggregation (unlabelled)

Each scene becomes ``OUT/<scene>``: the mesh vertices as points (``coord``, ``color``, area-weighted
``normal`` from the faces), ``segment20`` (the 20 benchmark classes), ``segment200`` (ScanNet200),
``instance`` (object ids), and every ``frame_step``-th frame of the stream as a view: the JPEG bytes
unchanged, depth as a uint16 PNG with the depth camera's own intrinsics. Frames with invalid
(``-inf``) poses are skipped and counted. The shared per-vertex annotation helpers here also serve
the ScanNet++ importer, whose scans use the same segment/aggregation files.
"""

from __future__ import annotations

import csv
import re
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from plyfile import PlyData, PlyElementParseError

from ..errors import DitrError, SceneError
from ..scene import COORD_FILE, Scene, View, check_rigid_pose
from .common import Progress, check_sampling, read_json_object, tracked
from .scannet import SCANNET20_CLASSES
from .scannet200 import SCANNET200_CLASSES, SCANNET200_IDS
from .scannet_sens import COLOR_SUFFIX, SensFile
from .splits import scannet_lists, write_listed_splits

#: NYU40 ids of the 20 ScanNet benchmark classes, in the order of ``SCANNET20_CLASSES`` (ids 0..19).
SCANNET20_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
LABELS_TSV = "scannetv2-labels.combined.tsv"


@dataclass
class RawImportReport:
    """What a raw import did; skipped and unusual input is counted here rather than hidden."""

    scenes: list[str] = field(default_factory=list)
    frames: int = 0
    frames_in_streams: int = 0
    skipped_invalid_pose: int = 0
    scenes_without_frames: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    scenes_without_labels: list[str] = field(default_factory=list)
    unknown_labels: list[str] = field(default_factory=list)
    segments_in_several_objects: int = 0
    extrinsics_ignored: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- mesh
def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Vertices (float32), vertex colours (uint8 or None) and triangles (int64, F x 3) of a PLY mesh."""
    if not path.is_file():
        raise SceneError(path, None, "missing (the scene's mesh)")
    try:  # declaring triangle faces lets plyfile memory-map the faces instead of parsing them one by one
        ply = PlyData.read(str(path), known_list_len={"face": {"vertex_indices": 3, "vertex_index": 3}})
    except PlyElementParseError as exc:
        raise SceneError(path, "face", f"cannot be read ({exc}); only triangle meshes are supported") from None
    except Exception as exc:
        raise SceneError(path, None, f"cannot be read as a PLY file ({exc})") from None
    names = [e.name for e in ply.elements]
    if "vertex" not in names:
        raise SceneError(path, "vertex", "missing")
    if "face" not in names:
        raise SceneError(path, "face", "missing: normals are computed from the mesh triangles")
    v = ply["vertex"].data
    props = v.dtype.names or ()
    coord = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
    color = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8) if "red" in props else None
    f = ply["face"].data
    key = next((k for k in ("vertex_indices", "vertex_index") if k in (f.dtype.names or ())), None)
    if key is None:
        raise SceneError(path, "face", "has no vertex_indices list")
    faces = f[key]
    if faces.dtype == object:  # plyfile could not memory-map (text PLY): rows of any length
        try:
            faces = np.vstack(faces) if len(faces) else np.zeros((0, 3), np.int64)
        except ValueError:
            raise SceneError(path, "face", "faces of several sizes; only triangle meshes are supported") from None
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise SceneError(path, "face", f"shape {faces.shape}; only triangle meshes are supported")
    if faces.size and (faces.min() < 0 or faces.max() >= len(coord)):
        raise SceneError(path, "face", f"vertex indices outside 0..{len(coord) - 1}")
    if not np.isfinite(coord).all():
        raise SceneError(path, "vertex", "contains NaN or infinite coordinates")
    return coord, color, faces


def vertex_normals(coord: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals: the sum of the adjacent triangles' cross products, normalised.

    The cross product of two edges is twice the triangle's area times its normal, so summing them
    weights each face by its area (large faces dominate, slivers do not). Orientation follows the
    winding (counter-clockwise seen from outside = outward). Vertices in no triangle get zero vectors.
    """
    v = coord.astype(np.float64)
    tri = v[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    corner = faces.ravel()
    acc = np.stack([np.bincount(corner, weights=np.repeat(face_n[:, c], 3), minlength=len(v)) for c in range(3)],
                   axis=1)
    length = np.linalg.norm(acc, axis=1, keepdims=True)
    return np.divide(acc, length, out=np.zeros_like(acc), where=length > 0).astype(np.float32)


def read_mesh_points(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A scan's points: the mesh vertices, with ``normal`` from the faces and ``color`` where the mesh has it."""
    coord, color, faces = read_mesh(path)
    attributes = {"normal": vertex_normals(coord, faces)}
    if color is not None:
        attributes["color"] = color
    return coord, attributes


# ---------------------------------------------------------------------------------------- annotations
@dataclass
class ObjectGroups:
    """Objects of a scan: per object its id, raw label, and the over-segmentation segments it covers."""

    object_ids: np.ndarray  # (G,) int64
    labels: list[str]
    segments: list[np.ndarray]


def read_segments(path: Path, num_vertices: int) -> np.ndarray:
    """The over-segmentation: one segment id per mesh vertex (``segIndices``)."""
    seg = read_json_object(path).get("segIndices")
    if not isinstance(seg, list):
        raise SceneError(path, "segIndices", "missing or not a list")
    if len(seg) != num_vertices:
        raise SceneError(path, "segIndices", f"has {len(seg)} entries, the mesh has {num_vertices} vertices")
    try:
        return np.asarray(seg, dtype=np.int64)
    except (TypeError, ValueError):
        raise SceneError(path, "segIndices", "must be integers") from None


def read_object_groups(path: Path) -> ObjectGroups:
    """The annotated objects (``segGroups``) of an aggregation / segments_anno file."""
    groups = read_json_object(path).get("segGroups")
    if not isinstance(groups, list):
        raise SceneError(path, "segGroups", "missing or not a list")
    ids, labels, segments = [], [], []
    for i, g in enumerate(groups):
        where = f"segGroups[{i}]"
        if not isinstance(g, dict) or not {"label", "segments"} <= g.keys():
            raise SceneError(path, where, "needs label and segments")
        obj = g.get("objectId", g.get("id"))
        if isinstance(obj, bool) or not isinstance(obj, int) or obj < 0:
            raise SceneError(path, f"{where}.objectId", f"must be a non-negative integer, got {obj!r}")
        try:
            segments.append(np.asarray(g["segments"], dtype=np.int64).reshape(-1))
        except (TypeError, ValueError):
            raise SceneError(path, f"{where}.segments", "must be a list of integers") from None
        ids.append(obj)
        labels.append(str(g["label"]))
    return ObjectGroups(np.asarray(ids, dtype=np.int64), labels, segments)


def vertex_groups(seg_indices: np.ndarray, groups: ObjectGroups) -> tuple[np.ndarray, int]:
    """Index into ``groups`` of the object each vertex belongs to (-1: none), and how many segments
    several objects claim (the later object wins, as the annotation tool overwrites earlier ones)."""
    if not groups.segments:
        return np.full(len(seg_indices), -1, np.int64), 0
    segs = np.concatenate(groups.segments)
    owner = np.repeat(np.arange(len(groups.segments)), [len(s) for s in groups.segments])
    uniq, last = np.unique(segs[::-1], return_index=True)  # first in reversed order = last claim
    owner = owner[::-1][last]
    pos = np.clip(np.searchsorted(uniq, seg_indices), 0, len(uniq) - 1)
    hit = uniq[pos] == seg_indices
    return np.where(hit, owner[pos], -1), int(len(segs) - len(uniq))


def per_vertex(group_values: np.ndarray, vertex_group: np.ndarray) -> np.ndarray:
    """Spread one value per object onto the vertices (-1 for vertices in no object)."""
    table = np.append(np.asarray(group_values, dtype=np.int64), -1)  # index -1 selects the trailing -1
    return table[vertex_group]


@dataclass(frozen=True)
class LabelTable:
    """``scannetv2-labels.combined.tsv``: per raw category its ScanNet label id and NYU40 id."""

    ids: dict[str, int]
    nyu40: dict[str, int]


def read_label_table(path: Path) -> LabelTable:
    if not path.is_file():
        raise DitrError(f"{path}: label table missing; ScanNet's {LABELS_TSV} is part of the download "
                        f"(pass its path with --labels-tsv)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or not {"raw_category", "id", "nyu40id"} <= rows[0].keys():
        raise SceneError(path, "header", "needs the columns raw_category, id and nyu40id (tab-separated)")
    ids, nyu = {}, {}
    for i, row in enumerate(rows, start=2):
        try:
            ids[row["raw_category"]] = int(row["id"])
            nyu[row["raw_category"]] = int(row["nyu40id"]) if row["nyu40id"] else 0
        except (TypeError, ValueError):
            raise SceneError(path, f"line {i}",
                             f"id / nyu40id are not integers: {row.get('id')!r}, {row.get('nyu40id')!r}") from None
    return LabelTable(ids, nyu)


def _remap(values: np.ndarray, valid: Sequence[int]) -> np.ndarray:
    """Map label ids to their position in ``valid`` (0..len-1), everything else to -1."""
    valid = np.asarray(valid, dtype=np.int64)
    order = np.argsort(valid)
    pos = np.clip(np.searchsorted(valid[order], values), 0, len(valid) - 1)
    return np.where(valid[order][pos] == values, order[pos], -1)


def scannet_labels(groups: ObjectGroups, vertex_group: np.ndarray, table: LabelTable
                   ) -> tuple[dict[str, np.ndarray], list[str]]:
    """``segment20``, ``segment200`` and ``instance`` per vertex, and the labels the table lacks."""
    ids = np.array([table.ids.get(label, -1) for label in groups.labels], dtype=np.int64)
    nyu = np.array([table.nyu40.get(label, -1) for label in groups.labels], dtype=np.int64)
    unknown = sorted({label for label in groups.labels if label not in table.ids})
    arrays = {"segment20": per_vertex(_remap(nyu, SCANNET20_NYU40_IDS), vertex_group),
              "segment200": per_vertex(_remap(ids, SCANNET200_IDS), vertex_group),
              "instance": per_vertex(groups.object_ids, vertex_group)}
    return arrays, unknown


def read_axis_alignment(path: Path) -> np.ndarray | None:
    """The 4x4 ``axisAlignment`` of a scan's metadata ``<scene>.txt`` (None where the scan has none)."""
    if not path.is_file():
        return None
    m = re.search(r"^\s*axisAlignment\s*=\s*(.*)$", path.read_text(), flags=re.MULTILINE)
    if m is None:
        return None
    try:
        values = np.array([float(x) for x in m.group(1).split()], dtype=np.float64)
    except ValueError:
        raise SceneError(path, "axisAlignment", "is not a list of numbers") from None
    if values.size != 16 or not np.isfinite(values).all():
        raise SceneError(path, "axisAlignment", f"holds {values.size} numbers, expected 16 finite ones (4x4)")
    return values.reshape(4, 4)


def transform_points(matrix: np.ndarray, coord: np.ndarray, normal: np.ndarray | None = None):
    """Apply a rigid 4x4 transform to points (and rotate their normals with it)."""
    r, t = matrix[:3, :3], matrix[:3, 3]
    coord = (coord.astype(np.float64) @ r.T + t).astype(np.float32)
    return coord, None if normal is None else (normal.astype(np.float64) @ r.T).astype(np.float32)


# ---------------------------------------------------------------------------------------- frames
def _check_pose(pose: np.ndarray, file: Path, where: str) -> None:
    check_rigid_pose(pose, file, f"{where} camera_to_world")


def sens_views(sens_path: Path, stage: Path, *, frame_step: int, max_frames: int | None, align: np.ndarray,
               report: RawImportReport, scene: str) -> list[View]:
    """Views from every ``frame_step``-th frame of a ``.sens`` stream, their files written into ``stage``.

    Colour is written as the stream's own JPEG (or PNG) bytes; depth as a uint16 PNG in the stream's
    units (``depth_shift`` per metre), described by the depth camera's intrinsics and size.
    """
    views: list[View] = []
    with SensFile(sens_path) as sens:
        h = sens.header
        report.frames_in_streams += h.num_frames
        # The stream's poses are used as the colour camera's (as ScanNet's exported pose files are);
        # streams declaring non-identity extrinsics are listed in the report, the extrinsics not applied.
        if not (np.allclose(h.extrinsic_color, np.eye(4)) and np.allclose(h.extrinsic_depth, np.eye(4))):
            report.extrinsics_ignored.append(scene)
        k_color, k_depth = h.intrinsic_color[:3, :3], h.intrinsic_depth[:3, :3]
        suffix = COLOR_SUFFIX[h.color_compression]
        invalid = 0
        for frame in sens.frames(frame_step):
            if not frame.has_valid_pose:
                report.skipped_invalid_pose += 1
                invalid += 1
                continue
            where = f"frame {frame.index}"
            _check_pose(frame.camera_to_world, sens_path, where)
            sens.check_color(frame)
            name = f"{frame.index:05d}"
            image_path, depth_path = stage / f"{name}{suffix}", stage / f"{name}.png"
            image_path.write_bytes(frame.color_bytes)
            # zlib level 1: 7x faster than the default 6 on sensor depth, files ~8% larger
            Image.fromarray(sens.depth_units(frame)).save(depth_path, compress_level=1)
            views.append(View(name=name, width=h.color_width, height=h.color_height, intrinsics=k_color,
                              cam_to_world=align @ frame.camera_to_world, image_path=image_path,
                              depth_path=depth_path, depth_scale=h.depth_shift, depth_intrinsics=k_depth,
                              depth_width=h.depth_width, depth_height=h.depth_height))
            if max_frames is not None and len(views) >= max_frames:
                break
    if invalid and not views:
        report.warnings.append(f"{scene}: all {invalid} frames have invalid poses (tracking lost); "
                               "written without views")
    return views


# ---------------------------------------------------------------------------------------- scenes
def import_raw_scene(scene_dir: Path, out_dir: Path, *, frame_step: int = 10, max_frames: int | None = None,
                     labels: Callable[[], LabelTable], axis_align: bool = False,
                     report: RawImportReport | None = None) -> Scene:
    """Convert one raw ScanNet scan directory into a ditr scene directory at ``out_dir``.

    ``labels`` returns the label table; it is only called for labelled scans, so test scans import
    without one.
    """
    report = report if report is not None else RawImportReport()
    check_sampling(frame_step, max_frames)
    name = scene_dir.name
    coord, attributes = read_mesh_points(scene_dir / f"{name}_vh_clean_2.ply")
    attributes.update(_scene_labels(scene_dir, len(coord), labels, report))

    meta_file = scene_dir / f"{name}.txt"
    matrix = read_axis_alignment(meta_file)
    align = np.eye(4)
    if axis_align:
        if matrix is None:
            raise SceneError(meta_file, "axisAlignment", "missing; --axis-align needs the scan's alignment matrix")
        align = matrix
        coord, attributes["normal"] = transform_points(align, coord, attributes["normal"])

    meta: dict = {"dataset": "scannet", "name": name, "ignore_index": -1, "class_names": SCANNET20_CLASSES,
                  "acquisition": {"kind": "mesh"},
                  "class_names_200": list(SCANNET200_CLASSES), "axis_aligned": axis_align}
    if "segment20" in attributes:
        meta["segment"] = "segment20"
    if matrix is not None:
        meta["axis_align_matrix"] = matrix.tolist()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.frames.", dir=out_dir.parent) as stage:
        sens_path = scene_dir / f"{name}.sens"
        views = []
        if sens_path.is_file():
            views = sens_views(sens_path, Path(stage), frame_step=frame_step, max_frames=max_frames,
                               align=align, report=report, scene=name)
        return save_scene(Scene(coord=coord, attributes=attributes, views=views, meta=meta), out_dir, name, report)


def save_scene(scene: Scene, out_dir: Path, name: str, report: Any) -> Scene:
    """Write an imported scan and count it in ``report`` (any report with ``scenes``, ``frames`` and
    ``scenes_without_frames``, as the ScanNet and ScanNet++ reports have); a scan without frames is listed."""
    if not scene.views:
        report.scenes_without_frames.append(name)
    scene.save(out_dir)
    report.scenes.append(name)
    report.frames += len(scene.views)
    return scene


def _scene_labels(scene_dir: Path, n: int, labels: Callable[[], LabelTable],
                  report: RawImportReport) -> dict[str, np.ndarray]:
    name = scene_dir.name
    segs_file = scene_dir / f"{name}_vh_clean_2.0.010000.segs.json"
    agg_file = scene_dir / f"{name}.aggregation.json"
    if not segs_file.exists() and not agg_file.exists():
        report.scenes_without_labels.append(name)
        return {}
    for f in (segs_file, agg_file):
        if not f.is_file():
            raise SceneError(f, None, "missing (a labelled scan needs both the .segs.json and the .aggregation.json)")
    groups = read_object_groups(agg_file)
    vertex_group, shared = vertex_groups(read_segments(segs_file, n), groups)
    report.segments_in_several_objects += shared
    arrays, unknown = scannet_labels(groups, vertex_group, labels())
    report.unknown_labels = sorted(set(report.unknown_labels) | set(unknown))
    return arrays


def find_scans(src: Path) -> list[Path]:
    """Scan directories: SRC/scans/* and SRC/scans_test/* (the download layout), else SRC/* or SRC."""
    def is_scan(p: Path) -> bool:
        return p.is_dir() and ((p / f"{p.name}_vh_clean_2.ply").exists() or (p / f"{p.name}.sens").exists())

    if is_scan(src):
        return [src]
    roots = [r for r in (src / "scans", src / "scans_test") if r.is_dir()] or [src]
    return sorted((p for r in roots for p in r.iterdir() if is_scan(p)), key=lambda p: p.name)


def select_scenes(found: list[Path], names: Sequence[str] | None, src: Path) -> list[Path]:
    """The scenes named on the command line (all when none are), with a clear error for unknown names."""
    if not found:
        raise DitrError(f"{src}: no scans found (expected SRC/scans/<scene>/<scene>_vh_clean_2.ply or .sens)")
    if not names:
        return found
    by_name = {p.name: p for p in found}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DitrError(f"{src}: scenes not found: {', '.join(missing)}")
    return [by_name[n] for n in names]


def import_scenes(todo: Sequence[Path], out: Path, convert: Callable[[Path, Path], object], *, skip_existing: bool,
                  skipped: list[str], progress: Progress | None) -> None:
    """``convert(scene_dir, OUT/<scene>)`` for every scene; with ``skip_existing`` (resuming an interrupted
    import) scenes already in OUT are kept and listed in ``skipped``. A scene directory is complete once
    it exists: :meth:`Scene.save` moves it into place atomically."""
    for scene_dir in tracked(todo, progress):
        target = out / scene_dir.name
        if skip_existing and (target / COORD_FILE).is_file():
            skipped.append(scene_dir.name)
        else:
            convert(scene_dir, target)


def import_scannet_raw(src: str | Path, out: str | Path, *, frame_step: int = 10, max_frames: int | None = None,
                       labels_tsv: str | Path | None = None, axis_align: bool = False,
                       splits_dir: str | Path | None = None, scenes: Sequence[str] | None = None,
                       skip_existing: bool = False, progress: Progress | None = None) -> RawImportReport:
    """Import raw ScanNet scans under ``src`` into ``out/<scene>`` (see the module docstring)."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DitrError(f"{src}: source directory does not exist")
    todo = select_scenes(find_scans(src), scenes, src)
    tsv = Path(labels_tsv) if labels_tsv is not None else src / LABELS_TSV
    table: list[LabelTable] = []

    def labels() -> LabelTable:  # read once, and only if some scan is labelled
        if not table:
            table.append(read_label_table(tsv))
        return table[0]

    report = RawImportReport()
    convert = partial(import_raw_scene, frame_step=frame_step, max_frames=max_frames, labels=labels,
                      axis_align=axis_align, report=report)
    import_scenes(todo, out, convert, skip_existing=skip_existing, skipped=report.skipped_existing, progress=progress)
    if splits_dir is not None:
        report.splits = write_listed_splits(out, scannet_lists(Path(splits_dir)))
    return report
