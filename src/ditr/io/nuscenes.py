"""nuScenes (lidarseg) importer reading the dataset's own JSON tables; no nuscenes-devkit needed.

Source layout (what nuscenes.org's downloads unpack to)::

    SRC/v1.0-trainval/   sample.json sample_data.json calibrated_sensor.json ego_pose.json sensor.json
                         scene.json log.json [lidarseg.json category.json]   (v1.0-mini, v1.0-test alike)
    SRC/samples/LIDAR_TOP/*.pcd.bin      float32 (N, 5): x, y, z, intensity, ring index
    SRC/samples/CAM_*/*.jpg              the six cameras of each key frame, 1600x900
    SRC/sweeps/LIDAR_TOP/*.pcd.bin       only for --sweeps
    SRC/lidarseg/v1.0-trainval/<token>_lidarseg.bin   uint8 per point: category.json ``index``

Every key frame (``sample``) becomes one scene directory ``OUT/<scene name>/<sample token>/``:

* ``coord.npy`` in the **LIDAR_TOP sensor frame at the key frame's timestamp** (x right, y forward,
  z up; the sensor sits about 1.84 m above the road); ``strength.npy`` the raw intensity (0-255).
  The ring index is dropped. With ``sweeps`` the previous LiDAR sweeps are moved into that frame
  through the global frame and appended after the key-frame points (their labels are -1).
* ``views.json``: the six cameras in a fixed order (``CAMERAS``). A camera's pose is the chain
  camera -> ego (camera time) -> global -> ego (LiDAR time) -> LiDAR, because the cameras fire at
  other instants than the LiDAR sweep passes them: going through the global frame compensates the
  ego motion in between (up to ~0.5 m at city speeds), which a LiDAR->camera chain through a single
  ego pose would not. Images are copied unchanged.
* ``segment.npy``: lidarseg categories mapped to the 16 classes of the lidarseg benchmark
  (``LIDARSEG_TO_CLASS``), -1 = ignore; absent when the sample has no lidarseg file.

``OUT/splits/<split>.txt`` list the imported scene names per split (each scene directory holds its
samples, which ``ditr.data.dataset.resolve_scenes`` expands).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DitrError, SceneError
from ..scene import Scene, View
from .common import Progress, image_size, quaternion_to_rotation, read_json, read_json_object
from .splits import write_split

LIDAR = "LIDAR_TOP"
#: Fixed camera order of every sample (docs/design.md#views-per-dataset: the six cameras of the key frame, fixed order).
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
#: Floats per point in a nuScenes ``.pcd.bin``: x, y, z, intensity, ring index.
PCD_FIELDS = 5

#: The 16 classes of the nuScenes lidarseg benchmark (the order of configs/nuscenes.yaml).
CLASS_NAMES = ["barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
               "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain",
               "manmade", "vegetation"]

#: The benchmark's public merge of the 32 lidarseg categories into 16 classes; None = ignore (-1).
LIDARSEG_TO_CLASS: dict[str, str | None] = {
    "noise": None,
    "animal": None,
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.personal_mobility": None,
    "human.pedestrian.police_officer": "pedestrian",
    "human.pedestrian.stroller": None,
    "human.pedestrian.wheelchair": None,
    "movable_object.barrier": "barrier",
    "movable_object.debris": None,
    "movable_object.pushable_pullable": None,
    "movable_object.trafficcone": "traffic_cone",
    "static_object.bicycle_rack": None,
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.emergency.ambulance": None,
    "vehicle.emergency.police": None,
    "vehicle.motorcycle": "motorcycle",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface",
    "flat.other": "other_flat",
    "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain",
    "static.manmade": "manmade",
    "static.other": None,
    "static.vegetation": "vegetation",
    "vehicle.ego": None,
}

#: The official v1.0-mini scene split (8 train / 2 val scenes).
MINI_SPLITS = {
    "train": ["scene-0061", "scene-0553", "scene-0655", "scene-0757", "scene-0796", "scene-1077",
              "scene-1094", "scene-1100"],
    "val": ["scene-0103", "scene-0916"],
}
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class NuScenesImportReport:
    """What an import did; skipped input (missing cameras, unlabelled samples) is counted here."""

    version: str = ""
    scenes: list[str] = field(default_factory=list)
    samples: int = 0
    points: int = 0
    views: int = 0
    missing_cameras: dict[str, int] = field(default_factory=dict)
    missing_image_files: int = 0
    lidarseg: bool = False
    labelled_samples: int = 0
    unlabelled_samples: int = 0
    unmapped_categories: list[str] = field(default_factory=list)
    sweeps: int = 0
    splits: dict[str, int] | None = None
    scenes_in_no_split: list[str] = field(default_factory=list)
    tables_seconds: float = 0.0
    seconds_per_sample: float = 0.0


# ------------------------------------------------------------------------------------------ tables
class Table:
    """One devkit table (a JSON list of records) indexed by token, with errors naming the file."""

    def __init__(self, file: Path):
        self.file = file
        records = read_json(file, missing="missing: the nuScenes tables of this version need it")
        if not isinstance(records, list) or not all(isinstance(r, dict) and "token" in r for r in records):
            raise SceneError(file, None, "must be a JSON list of records that each have a 'token'")
        self.records: list[dict[str, Any]] = records
        self.by_token = {r["token"]: r for r in records}

    def get(self, token: str, referrer: Table, field_name: str) -> dict[str, Any]:
        """The record ``token`` that ``referrer``'s ``field_name`` points to."""
        record = self.by_token.get(token)
        if record is None:
            raise SceneError(referrer.file, field_name, f"token {token!r} is not in {self.file.name}")
        return record

    def value(self, record: dict[str, Any], key: str) -> Any:
        if key not in record:
            raise SceneError(self.file, f"{record['token']}.{key}", "missing")
        return record[key]


def find_version(src: Path, version: str | None) -> str:
    """The table directory under ``src``: ``version`` if given, else the only ``v*/sample.json``."""
    if version is not None:
        if not (src / version).is_dir():
            raise DitrError(f"{src / version}: no such table directory (--version {version})")
        return version
    found = sorted(p.parent.name for p in src.glob("v*/sample.json"))
    if not found:
        raise DitrError(f"{src}: no nuScenes tables found (expected SRC/<version>/sample.json, e.g. v1.0-mini)")
    if len(found) > 1:
        raise DitrError(f"{src}: several table versions ({', '.join(found)}); choose one with --version")
    return found[0]


# ------------------------------------------------------------------------------------------ geometry
def quaternion_matrix(q: Sequence[float], file: Path, field_name: str) -> np.ndarray:
    """3x3 rotation of a unit quaternion stored as (w, x, y, z), the nuScenes convention."""
    q = _vector(q, 4, file, field_name)
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > 1e-3:
        raise SceneError(file, field_name, f"is not a unit quaternion (norm {norm:.6g})")
    return quaternion_to_rotation(q)


def _vector(value: Any, size: int, file: Path, field_name: str) -> np.ndarray:
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneError(file, field_name, f"must be {size} numbers") from None
    if v.shape != (size,) or not np.isfinite(v).all():
        raise SceneError(file, field_name, f"must be {size} finite numbers, got {value!r}")
    return v


def pose_matrix(table: Table, record: dict[str, Any]) -> np.ndarray:
    """4x4 transform of a calibrated_sensor (sensor -> ego) or ego_pose (ego -> global) record."""
    token = record["token"]
    pose = np.eye(4)
    pose[:3, :3] = quaternion_matrix(table.value(record, "rotation"), table.file, f"{token}.rotation")
    pose[:3, 3] = _vector(table.value(record, "translation"), 3, table.file, f"{token}.translation")
    return pose


def rigid_inverse(pose: np.ndarray) -> np.ndarray:
    inv = np.eye(4)
    inv[:3, :3] = pose[:3, :3].T
    inv[:3, 3] = -pose[:3, :3].T @ pose[:3, 3]
    return inv


# ------------------------------------------------------------------------------------------ files
def read_pcd_bin(path: Path) -> np.ndarray:
    """A nuScenes LiDAR file: float32 (N, 5) x, y, z, intensity, ring index."""
    if not path.is_file():
        raise SceneError(path, "points", "missing LiDAR file")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size == 0 or raw.size % PCD_FIELDS:
        raise SceneError(path, "points", f"holds {raw.size} float32 values, not a positive multiple of "
                         f"{PCD_FIELDS} (x, y, z, intensity, ring)")
    points = raw.reshape(-1, PCD_FIELDS)
    bad = ~np.isfinite(points[:, :4]).all(axis=1)
    if bad.any():
        raise SceneError(path, "points", f"{int(bad.sum())} points have NaN or infinite values")
    return points


def category_lookup(category: Table) -> tuple[np.ndarray, list[str]]:
    """Raw lidarseg index -> class id (-1 ignore, -2 not in category.json), and unmapped names."""
    lut = np.full(256, -2, dtype=np.int64)
    unmapped = []
    for record in category.records:
        index, name = category.value(record, "index"), category.value(record, "name")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 256:
            raise SceneError(category.file, f"{record['token']}.index", f"must be an integer 0-255, got {index!r}")
        if name not in LIDARSEG_TO_CLASS:
            unmapped.append(name)
        target = LIDARSEG_TO_CLASS.get(name)
        lut[index] = CLASS_NAMES.index(target) if target is not None else -1
    return lut, unmapped


def read_lidarseg(path: Path, num_points: int, lut: np.ndarray) -> np.ndarray:
    """Per-point class ids (int64, -1 ignore) from a ``<token>_lidarseg.bin`` (uint8 per point)."""
    if not path.is_file():
        raise SceneError(path, "labels", "missing lidarseg file (listed in lidarseg.json)")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size != num_points:
        raise SceneError(path, "labels", f"holds {raw.size} labels for {num_points} points")
    labels = lut[raw]
    if (labels == -2).any():
        unknown = sorted(set(raw[labels == -2].tolist()))
        raise SceneError(path, "labels", f"category indices {unknown} are not in category.json")
    return labels


# ------------------------------------------------------------------------------------------ import
class NuScenesTables:
    """The tables of one version, with each sample's key-frame sample_data per sensor channel."""

    def __init__(self, src: Path, version: str):
        self.src, self.version = src, version
        root = src / version
        self.sample, self.sample_data = Table(root / "sample.json"), Table(root / "sample_data.json")
        self.calibrated_sensor, self.ego_pose = Table(root / "calibrated_sensor.json"), Table(root / "ego_pose.json")
        self.sensor, self.scene = Table(root / "sensor.json"), Table(root / "scene.json")
        self.log = Table(root / "log.json")
        self.lidarseg = Table(root / "lidarseg.json") if (root / "lidarseg.json").is_file() else None
        self.category = Table(root / "category.json") if self.lidarseg is not None else None
        self.labels_of = {} if self.lidarseg is None else {
            self.lidarseg.value(r, "sample_data_token"): r for r in self.lidarseg.records}
        self.key_frames: dict[str, dict[str, dict[str, Any]]] = {}
        for sd in self.sample_data.records:
            if self.sample_data.value(sd, "is_key_frame"):
                self.key_frames.setdefault(self.sample_data.value(sd, "sample_token"), {})[self.channel(sd)] = sd

    def calibration(self, sd: dict[str, Any]) -> dict[str, Any]:
        return self.calibrated_sensor.get(self.sample_data.value(sd, "calibrated_sensor_token"), self.sample_data,
                                          f"{sd['token']}.calibrated_sensor_token")

    def channel(self, sd: dict[str, Any]) -> str:
        calib = self.calibration(sd)
        sensor = self.sensor.get(self.calibrated_sensor.value(calib, "sensor_token"),
                                 self.calibrated_sensor, f"{calib['token']}.sensor_token")
        return self.sensor.value(sensor, "channel")

    def sensor_to_global(self, sd: dict[str, Any]) -> np.ndarray:
        """sensor -> ego (at this sample_data's timestamp) -> global."""
        ego = self.ego_pose.get(self.sample_data.value(sd, "ego_pose_token"), self.sample_data,
                                f"{sd['token']}.ego_pose_token")
        return pose_matrix(self.ego_pose, ego) @ pose_matrix(self.calibrated_sensor, self.calibration(sd))

    def intrinsics(self, sd: dict[str, Any]) -> np.ndarray:
        calib = self.calibration(sd)
        try:
            k = np.asarray(self.calibrated_sensor.value(calib, "camera_intrinsic"), dtype=np.float64)
        except (TypeError, ValueError):
            k = np.zeros(0)
        if k.shape != (3, 3) or not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0 \
                or not np.allclose(k[2], [0, 0, 1]):
            raise SceneError(self.calibrated_sensor.file, f"{calib['token']}.camera_intrinsic",
                             "must be a 3x3 camera matrix (positive focal lengths, last row 0 0 1)")
        return k

    def samples_by_scene(self) -> dict[str, list[dict[str, Any]]]:
        """Scene name -> its samples in time order (scene.json order)."""
        by_token: dict[str, list[dict[str, Any]]] = {}
        for s in self.sample.records:
            by_token.setdefault(self.sample.value(s, "scene_token"), []).append(s)
        return {self.scene.value(sc, "name"): sorted(by_token.get(sc["token"], []),
                                                     key=lambda s: self.sample.value(s, "timestamp"))
                for sc in self.scene.records}

    def path(self, sd: dict[str, Any]) -> Path:
        return self.src / self.sample_data.value(sd, "filename")


def _lidar_points(tables: NuScenesTables, lidar: dict[str, Any], lidar_to_global: np.ndarray,
                  sweeps: int) -> tuple[np.ndarray, int, int]:
    """Key-frame points, then up to ``sweeps`` previous sweeps moved into the key frame's LiDAR frame.

    Returns the points (N, 5), how many of them belong to the key frame (they come first) and how
    many sweeps were appended (fewer than asked at the start of a scene).
    """
    key = read_pcd_bin(tables.path(lidar))
    parts = [key]
    key_from_global = rigid_inverse(lidar_to_global)
    sd = lidar
    while len(parts) <= sweeps and tables.sample_data.value(sd, "prev"):
        sd = tables.sample_data.get(sd["prev"], tables.sample_data, f"{sd['token']}.prev")
        sweep = read_pcd_bin(tables.path(sd))
        move = key_from_global @ tables.sensor_to_global(sd)
        moved = sweep[:, :3].astype(np.float64) @ move[:3, :3].T + move[:3, 3]
        parts.append(np.concatenate([moved.astype(np.float32), sweep[:, 3:]], axis=1))
    return np.concatenate(parts), len(key), len(parts) - 1


def _views(tables: NuScenesTables, sample_token: str, lidar_to_global: np.ndarray,
           report: NuScenesImportReport) -> list[View]:
    """The sample's cameras in ``CAMERAS`` order with poses in its LiDAR frame; gaps are counted."""
    frames = tables.key_frames[sample_token]
    global_to_lidar = rigid_inverse(lidar_to_global)
    views = []
    for channel in CAMERAS:
        sd = frames.get(channel)
        if sd is None:
            report.missing_cameras[channel] = report.missing_cameras.get(channel, 0) + 1
            continue
        image = tables.path(sd)
        if not image.is_file():
            report.missing_image_files += 1
            continue
        width, height = image_size(image, f"{channel} image")
        views.append(View(name=channel, width=width, height=height, intrinsics=tables.intrinsics(sd),
                          cam_to_world=global_to_lidar @ tables.sensor_to_global(sd), image_path=image))
    return views


def import_sample(tables: NuScenesTables, sample: dict[str, Any], scene_name: str, location: str,
                  out_dir: Path, *, sweeps: int = 0, lut: np.ndarray | None = None,
                  report: NuScenesImportReport | None = None) -> Scene:
    """Convert one key frame (LiDAR + cameras + lidarseg labels) into a scene directory."""
    report = report if report is not None else NuScenesImportReport()
    token = sample["token"]
    lidar = tables.key_frames.get(token, {}).get(LIDAR)
    if lidar is None:
        raise SceneError(tables.sample_data.file, LIDAR, f"sample {token} has no {LIDAR} key frame")
    lidar_to_global = tables.sensor_to_global(lidar)
    points, num_key, used = _lidar_points(tables, lidar, lidar_to_global, sweeps)
    attributes: dict[str, np.ndarray] = {"strength": np.ascontiguousarray(points[:, 3])}
    meta: dict[str, Any] = {"dataset": "nuscenes", "name": token, "scene": scene_name, "sample_token": token,
                            "timestamp": tables.sample.value(sample, "timestamp"), "location": location,
                            "frame": f"{LIDAR} at the key frame's timestamp (x right, y forward, z up)",
                            "key_frame_points": num_key, "sweeps": used,
                            "class_names": CLASS_NAMES, "ignore_index": -1, "acquisition": {"kind": "lidar"}}
    seg = tables.labels_of.get(lidar["token"])
    if seg is not None and lut is not None:
        labels = np.full(len(points), -1, dtype=np.int64)  # sweeps carry no labels
        labels[:num_key] = read_lidarseg(tables.src / tables.lidarseg.value(seg, "filename"), num_key, lut)
        attributes["segment"] = labels
        meta["segment"] = "segment"
        report.labelled_samples += 1
    elif tables.lidarseg is not None:
        report.unlabelled_samples += 1
    views = _views(tables, token, lidar_to_global, report)
    scene = Scene(coord=np.ascontiguousarray(points[:, :3]), attributes=attributes, views=views, meta=meta)
    scene.save(out_dir)
    report.samples += 1
    report.points += len(points)
    report.views += len(views)
    report.sweeps += used
    return scene


# ------------------------------------------------------------------------------------------ splits
def read_split_file(path: Path, version: str) -> dict[str, list[str]]:
    """Scene names per split from a JSON object ``{"train": [...], "val": [...]}``.

    The object that the devkit's ``create_splits_scenes()`` returns works as it is: for a mini
    version its ``mini_train`` / ``mini_val`` lists are used, otherwise ``train`` / ``val`` / ``test``.
    """
    doc = read_json_object(path, missing="split file not found",
                           expected="a JSON object of split name -> list of scene names")
    splits = {}
    for name in SPLIT_NAMES:
        key = f"mini_{name}" if "mini" in version and f"mini_{name}" in doc else name
        if key not in doc:
            continue
        names = doc[key]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SceneError(path, key, "must be a list of scene names")
        splits[name] = names
    if not splits:
        raise SceneError(path, None, f"has none of the splits {', '.join(SPLIT_NAMES)}")
    return splits


def _split_source(version: str, split_file: Path | None) -> Callable[[list[str]], dict[str, list[str]]]:
    """All scene names -> scene lists per split; raises (before any table is read) when unknown."""
    if split_file is not None:
        lists = read_split_file(split_file, version)
        return lambda names: lists
    if "mini" in version:
        return lambda names: MINI_SPLITS
    if version.endswith("-test"):
        return lambda names: {"test": names}
    raise DitrError(
        f"{version}: ditr does not ship the official scene lists of this version; pass --split-file "
        "SPLITS.json ({\"train\": [scene names], \"val\": [...]}; e.g. written with the devkit: python -c "
        "\"import json; from nuscenes.utils.splits import create_splits_scenes as c; print(json.dumps(c()))\" "
        "> splits.json), or --no-splits to import without split lists")


def write_splits(out: Path, splits: dict[str, list[str]], imported: list[str],
                 report: NuScenesImportReport) -> None:
    """``OUT/splits/<split>.txt``: the split's scenes present under OUT (this import or earlier ones)."""
    report.splits = {name: write_split(out, name, scenes) for name, scenes in splits.items()}
    listed = {s for scenes in splits.values() for s in scenes}
    report.scenes_in_no_split = [s for s in imported if s not in listed]


# ------------------------------------------------------------------------------------------ entry
def import_nuscenes(src: str | Path, out: str | Path, *, version: str | None = None,
                    scenes: Sequence[str] | None = None, max_samples: int | None = None, sweeps: int = 0,
                    split_file: str | Path | None = None, splits: bool = True,
                    progress: Progress | None = None) -> NuScenesImportReport:
    """Import the key frames of ``src`` into ``out/<scene>/<sample token>/`` plus split lists.

    ``max_samples`` caps the key frames per scene (the first ones in time); ``progress(done, total)``
    is called after every sample.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DitrError(f"{src}: source directory does not exist")
    if sweeps < 0 or (max_samples is not None and max_samples < 1):
        raise DitrError(f"sweeps ({sweeps}) must be >= 0 and max_samples ({max_samples}) >= 1")
    version = find_version(src, version)
    split_source = _split_source(version, Path(split_file) if split_file else None) if splits else None
    report = NuScenesImportReport(version=version)
    start = time.perf_counter()
    tables = NuScenesTables(src, version)
    lut = None
    if tables.lidarseg is not None:
        lut, report.unmapped_categories = category_lookup(tables.category)
        report.lidarseg = True
    by_scene = tables.samples_by_scene()
    if scenes:
        unknown = [s for s in scenes if s not in by_scene]
        if unknown:
            raise DitrError(f"scenes not in {tables.scene.file}: {', '.join(unknown)}")
        by_scene = {s: by_scene[s] for s in scenes}
    by_scene = {s: samples[:max_samples] for s, samples in by_scene.items()}
    report.tables_seconds = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    total, done = sum(len(v) for v in by_scene.values()), 0
    scene_records = {tables.scene.value(r, "name"): r for r in tables.scene.records}
    for name, samples in by_scene.items():
        log = tables.log.get(tables.scene.value(scene_records[name], "log_token"), tables.scene,
                             f"{scene_records[name]['token']}.log_token")
        for sample in samples:
            import_sample(tables, sample, name, log.get("location", ""), out / name / sample["token"],
                          sweeps=sweeps, lut=lut, report=report)
            done += 1
            if progress is not None:
                progress(done, total)
        if samples:
            report.scenes.append(name)
    report.seconds_per_sample = round((time.perf_counter() - start) / max(done, 1), 4)
    if split_source is not None:
        write_splits(out, split_source(list(scene_records)), report.scenes, report)
    return report
