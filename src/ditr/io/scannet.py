"""ScanNet importer for already preprocessed scenes plus exported frames.

Source layout (what common preprocessing and ScanNet's frame exporter write)::

    SRC/<scene>/coord.npy, color.npy, normal.npy?, segment20.npy?, segment200.npy?, instance.npy?
    (or SRC/train/<scene>/..., SRC/val/<scene>/..., SRC/test/<scene>/...: scenes sorted by split)
    SRC/frames/<scene>/color/<frame>.jpg
    SRC/frames/<scene>/pose/<frame>.txt             4x4 camera-to-world (raw scan frame)
    SRC/frames/<scene>/intrinsic/intrinsic_color.txt (4x4; the top-left 3x3 is used)
    SRC/frames/<scene>/depth/<frame>.png            optional, uint16 mm, with intrinsic_depth.txt
    SRC/frames/<scene>/axis_align_matrix.txt        optional

ScanNet marks frames whose tracking failed with ``-inf`` poses: those frames are skipped and
counted, and a scene whose every frame was skipped so is named in the report's ``warnings`` (it is
written without views: 3D-only training uses it, DITR samples of it carry no image features).
A finite pose that is not rigid (scaled, sheared, mirrored) is an error naming its file. If the
points were axis-aligned by the preprocessing (``--axis-aligned``), the poses are
aligned with the same matrix so that points and cameras stay in one frame.

Split lists ``OUT/splits/<split>.txt`` come from the official ScanNet lists (``splits_dir``) or,
without them, from a ``SRC/<split>/<scene>`` layout. Scenes stored without ``normal.npy`` get normals
from :func:`ditr.normals.scene_normals` with ``estimate_normals`` (else the report warns: the
ScanNet presets read them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DitrError, SceneError
from ..normals import scene_normals
from ..scene import Scene, View, check_rigid_pose
from .splits import listed_scenes, scannet_lists, write_listed_splits, write_split

#: Split folders of a source sorted by split (SRC/train/<scene>/coord.npy ...).
SPLIT_FOLDERS = ("train", "val", "test")

SCANNET20_CLASSES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
]


@dataclass
class ImportReport:
    """What an import did, so that skipped input is reported rather than silently dropped."""

    scenes: list[str] = field(default_factory=list)
    frames: int = 0
    skipped_invalid_pose: int = 0
    scenes_without_frames: list[str] = field(default_factory=list)
    normals_estimated: list[str] = field(default_factory=list)
    scenes_without_normals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)  # split file -> scenes it lists


def read_matrix(path: Path) -> np.ndarray:
    """Read a whitespace matrix file, or ScanNet's ``axisAlignment = a b c ...`` metadata line."""
    text = path.read_text()
    m = re.search(r"axisAlignment\s*=\s*([-\d.eE+\s]+)", text)
    values = m.group(1).split() if m else text.split()
    try:
        arr = np.array([float(x) for x in values], dtype=np.float64)
    except ValueError:
        raise SceneError(path, None, "is not a matrix of numbers") from None
    side = int(round(np.sqrt(arr.size)))
    if side * side != arr.size or side not in (3, 4):
        raise SceneError(path, None, f"holds {arr.size} numbers, expected a 3x3 or 4x4 matrix")
    return arr.reshape(side, side)


def _intrinsics(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SceneError(path, "intrinsics", "missing")
    return read_matrix(path)[:3, :3]


def _frame_sort_key(p: Path):
    return (0, int(p.stem)) if p.stem.isdigit() else (1, p.stem)


def import_scene(scene_dir: Path, frames_dir: Path | None, out_dir: Path, *, frame_step: int = 1,
                 max_frames: int | None = None, segment: str = "segment20", axis_aligned: bool = False,
                 estimate_normals: bool = False, report: ImportReport | None = None) -> Scene:
    """Convert one preprocessed ScanNet scene (+ its exported frames) into the ditr scene format."""
    report = report if report is not None else ImportReport()
    if frame_step < 1 or (max_frames is not None and max_frames < 1):
        raise DitrError(f"frame_step ({frame_step}) and max_frames ({max_frames}) must be >= 1")
    base = Scene.load(scene_dir)  # validates the point arrays with file/field-naming errors
    views: list[View] = []
    if frames_dir is not None and frames_dir.is_dir():
        align = np.eye(4)
        if axis_aligned:
            align_file = frames_dir / "axis_align_matrix.txt"
            if not align_file.is_file():
                raise SceneError(align_file, None, "--axis-aligned needs the scene's axis_align_matrix.txt")
            align = read_matrix(align_file)
            if align.shape != (4, 4):
                raise SceneError(align_file, None, "must hold a 4x4 matrix")
            check_rigid_pose(align, align_file, "axis alignment")
        k = _intrinsics(frames_dir / "intrinsic" / "intrinsic_color.txt")
        depth_dir = frames_dir / "depth"
        k_depth = _intrinsics(frames_dir / "intrinsic" / "intrinsic_depth.txt") if depth_dir.is_dir() else None
        images = sorted((frames_dir / "color").glob("*.jpg"), key=_frame_sort_key)[::frame_step]
        invalid = 0
        for image in images:
            pose_file = frames_dir / "pose" / f"{image.stem}.txt"
            if not pose_file.is_file():
                raise SceneError(pose_file, "pose", f"missing for frame {image.name}")
            pose = read_matrix(pose_file)
            if pose.shape != (4, 4):
                raise SceneError(pose_file, "pose", "must hold a 4x4 camera-to-world matrix")
            if not np.isfinite(pose).all():
                report.skipped_invalid_pose += 1
                invalid += 1
                continue
            check_rigid_pose(pose, pose_file, "pose")
            with Image.open(image) as im:
                width, height = im.size
            view = View(name=image.stem, width=width, height=height, intrinsics=k,
                        cam_to_world=align @ pose, image_path=image)
            depth_file = depth_dir / f"{image.stem}.png"
            if k_depth is not None and depth_file.is_file():
                with Image.open(depth_file) as im:
                    dw, dh = im.size
                view.depth_path, view.depth_scale = depth_file, 1000.0
                if (dw, dh) != (width, height) or not np.allclose(k_depth, k):
                    view.depth_intrinsics, view.depth_width, view.depth_height = k_depth, dw, dh
            views.append(view)
            if max_frames is not None and len(views) >= max_frames:
                break
        if images and not views:
            report.warnings.append(f"{scene_dir.name}: all {invalid} frames have invalid poses (tracking lost); "
                                   "written without views")
    if not views:
        report.scenes_without_frames.append(scene_dir.name)
    meta: dict = {"dataset": "scannet", "name": scene_dir.name, "ignore_index": -1, "acquisition": {"kind": "mesh"}}
    if segment in base.attributes:
        meta["segment"] = segment
    if segment == "segment20":  # ScanNet200's names come with the raw label table (dataset importer)
        meta["class_names"] = SCANNET20_CLASSES
    attributes = dict(base.attributes)
    if "normal" not in attributes and estimate_normals:
        attributes["normal"] = scene_normals(base.coord, views)
        report.normals_estimated.append(scene_dir.name)
    elif "normal" not in attributes:
        report.scenes_without_normals.append(scene_dir.name)
    scene = Scene(coord=base.coord, attributes=attributes, views=views, meta=meta)
    scene.save(out_dir)
    report.scenes.append(scene_dir.name)
    report.frames += len(views)
    return scene


def import_scannet(src: str | Path, out: str | Path, *, splits_dir: str | Path | None = None,
                   **kwargs) -> ImportReport:
    """Import every scene directory under ``src`` (those holding coord.npy) into ``out/<scene>``, plus split lists."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DitrError(f"{src}: source directory does not exist")
    found = find_scenes(src)
    report = ImportReport()
    for scene_dir, _ in found:
        frames = _find_frames(src, scene_dir)
        import_scene(scene_dir, frames, out / scene_dir.name, report=report, **kwargs)
    if splits_dir is not None:
        report.splits = write_listed_splits(out, scannet_lists(Path(splits_dir)))
    else:
        by_split: dict[str, list[str]] = {}
        for scene_dir, split in found:
            if split is not None:
                by_split.setdefault(split, []).append(scene_dir.name)
        report.splits = {name: write_split(out, name, sorted({*listed_scenes(out, name), *scenes}))
                         for name, scenes in by_split.items()}
    if report.scenes_without_normals:
        report.warnings.append(f"scenes without normal.npy ({len(report.scenes_without_normals)}): the scannet "
                               "presets read normals; import again with --normals estimate")
    return report


def find_scenes(src: Path) -> list[tuple[Path, str | None]]:
    """(scene directory, split or None) of SRC itself, SRC/<scene>/ or SRC/<split>/<scene>/."""
    if (src / "coord.npy").is_file():  # SRC is a single scene directory
        return [(src, None)]
    found: list[tuple[Path, str | None]] = [(p.parent, None) for p in sorted(src.glob("*/coord.npy"))]
    found += [(p.parent, split) for split in SPLIT_FOLDERS for p in sorted((src / split).glob("*/coord.npy"))]
    if not found:
        raise DitrError(f"{src}: no scene directories with coord.npy found (expected SRC/<scene>/coord.npy "
                        "or SRC/train/<scene>/coord.npy)")
    return found


def _find_frames(src: Path, scene_dir: Path) -> Path | None:
    for candidate in (src / "frames" / scene_dir.name, scene_dir.parent / "frames" / scene_dir.name,
                      scene_dir / "frames"):
        if (candidate / "color").is_dir():
            return candidate
    return None
