"""Waymo Open Dataset v2 importer (perception v2.0.x parquet files): one scene per LiDAR frame.

Source layout (what ``gsutil`` copies from the v2 bucket; one directory per component, one parquet
file per 20 s segment, named by the segment's context name)::

    SRC/training/lidar/<context>.parquet               range images, per (frame, laser)
    SRC/training/lidar_calibration/<context>.parquet   extrinsic + beam inclinations, per laser
    SRC/training/lidar_pose/<context>.parquet          per-pixel vehicle pose of the TOP laser
    SRC/training/lidar_segmentation/<context>.parquet  range-image labels, labelled frames only
    SRC/training/camera_image/<context>.parquet        JPEG + vehicle pose at exposure, per (frame, camera)
    SRC/training/camera_calibration/<context>.parquet  intrinsics, extrinsic, size, per camera
    SRC/training/vehicle_pose/<context>.parquet        world_from_vehicle, per frame
    SRC/training/lidar_camera_projection/<context>.parquet  per range-image pixel: up to two camera
                                                       pixels, per (frame, laser); optional
    SRC/validation/...                                 the same

Geometry, as the format defines it. A range image has one row per beam (row 0 = the highest
inclination) and one column per azimuth step; column ``c`` of ``W`` looks along the *vehicle*
azimuth ``pi (1 - 2 (c + 0.5) / W)`` (+pi at the left edge, decreasing to -pi), so in the laser's
own frame the azimuth is that minus the yaw of the laser's extrinsic. A pixel with range ``r > 0``
is the point ``r (cos i cos a, cos i sin a, sin i)`` in the laser frame, moved to the vehicle frame
by the extrinsic. The TOP laser spins while the car moves (0.1 s per turn, ~1.4 m at 50 km/h), so
its range image carries the vehicle pose at each pixel's firing time; its points go to the world
frame with that pose and back with the frame's vehicle pose. The other lasers' range images are
already in the frame's vehicle frame. Scenes are written in the frame's vehicle frame (x forward,
y left, z up, metres).

Cameras are pinholes with OpenCV-style distortion. Waymo's camera frame is x forward, y left, z up;
``cam_to_world`` of a view is the OpenCV camera (x right, y down, z forward) in the scene frame,
through the vehicle pose at the image's exposure (``[CameraImageComponent].pose``), which
compensates the ego motion between the LiDAR sweep and the camera. Where the segment has
``lidar_camera_projection``, each view also carries the pixel Waymo projected every point to
(``View.pixels``, docs/scene-format.md#per-point-pixels), which includes the lens distortion and the
cameras' rolling shutter that the pinhole model leaves out; the projection uses those pixels, and the
pose only for the camera depth. Its range images (same size as the LiDAR's) hold per pixel
``(camera name, x, y)`` of a first and a second projection (camera name 0 = none), the first two
cameras seeing the point in the order FRONT, FRONT_LEFT, FRONT_RIGHT, SIDE_LEFT, SIDE_RIGHT. By
default only the first is imported, as the reference uses them (each point in at most one camera);
``projections="both"`` keeps the second too. Frames without that data fall back to the pinhole
model, with a warning and counts in the report.

Front-camera crop (docs/design.md#views-per-dataset): the three front cameras (FRONT, FRONT_LEFT, FRONT_RIGHT,
told apart by ``key.camera_name``) are 1920x1280, the two side cameras 1920x886. By default the importer drops
the front images' top 394 rows, so all five cameras share 1920x886 (one aspect before the model's
resize); the principal point moves up with the image (``c_v -= rows``), nothing else changes
(focal lengths, ``c_u``, the pose). Cropped images are re-encoded as JPEG (see
:func:`top_cropped_jpeg`); the side cameras' JPEGs are copied byte for byte. Stored pixels move up
with the crop (``y - rows``); a point projected into the removed rows is not in the cropped view.

Labels: only the TOP laser is labelled (channel 1 of the label range image = semantic class;
channel 0, the instance id, is not imported), on about one frame in five; points of the other
lasers get -1 (ignore).
Intensity (channel 1 of the range image) is written as ``tanh(intensity)`` to ``strength.npy``:
Waymo's raw intensity has a long tail and the model takes strength unnormalised.

Parquet files are read frame by frame: a segment's TOP range images are ~1 GB, so only key columns
are read up front and data columns row group by row group, keeping the row groups of the last
request, which decodes each row group once when frames are visited in file order.
"""

from __future__ import annotations

import difflib
import io
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DitrError, SceneError
from ..scene import Scene, View
from .common import Progress, check_sampling
from .splits import listed_scenes, write_split

KEY_SEGMENT = "key.segment_context_name"
KEY_TIME = "key.frame_timestamp_micros"
KEY_LASER = "key.laser_name"
KEY_CAMERA = "key.camera_name"

LASER_NAMES = {1: "TOP", 2: "FRONT", 3: "SIDE_LEFT", 4: "SIDE_RIGHT", 5: "REAR"}
CAMERA_NAMES = {1: "FRONT", 2: "FRONT_LEFT", 3: "FRONT_RIGHT", 4: "SIDE_LEFT", 5: "SIDE_RIGHT"}
TOP_LASER = 1
#: Cameras that ``crop_front_top`` applies to, by name (``CAMERA_NAMES`` of ``key.camera_name``).
FRONT_CAMERAS = frozenset({"FRONT", "FRONT_LEFT", "FRONT_RIGHT"})
#: docs/design.md#views-per-dataset: 1280 - 394 = 886 rows, the side cameras' height.
DEFAULT_CROP_FRONT_TOP = 394
#: Quality of re-encoded (cropped) JPEGs; why JPEG and why 95: see :func:`top_cropped_jpeg`.
CROP_JPEG_QUALITY = 95

#: Waymo ``Segmentation.Type`` (the tuple index is the type's value) -> ditr class name; None = ignore.
SEGMENTATION_TYPES: tuple[tuple[str, str | None], ...] = (
    ("TYPE_UNDEFINED", None), ("TYPE_CAR", "car"), ("TYPE_TRUCK", "truck"), ("TYPE_BUS", "bus"),
    ("TYPE_OTHER_VEHICLE", "other_vehicle"), ("TYPE_MOTORCYCLIST", "motorcyclist"),
    ("TYPE_BICYCLIST", "bicyclist"), ("TYPE_PEDESTRIAN", "pedestrian"), ("TYPE_SIGN", "sign"),
    ("TYPE_TRAFFIC_LIGHT", "traffic_light"), ("TYPE_POLE", "pole"),
    ("TYPE_CONSTRUCTION_CONE", "construction_cone"), ("TYPE_BICYCLE", "bicycle"),
    ("TYPE_MOTORCYCLE", "motorcycle"), ("TYPE_BUILDING", "building"), ("TYPE_VEGETATION", "vegetation"),
    ("TYPE_TREE_TRUNK", "tree_trunk"), ("TYPE_CURB", "curb"), ("TYPE_ROAD", "road"),
    ("TYPE_LANE_MARKER", "lane_marker"), ("TYPE_OTHER_GROUND", "other_ground"),
    ("TYPE_WALKABLE", "walkable"), ("TYPE_SIDEWALK", "sidewalk"),
)
CLASS_NAMES: list[str] = [name for _, name in SEGMENTATION_TYPES if name is not None]
#: Lookup table Waymo type value -> ditr class id (-1 = ignore).
LABEL_MAP = np.array([CLASS_NAMES.index(name) if name else -1 for _, name in SEGMENTATION_TYPES], np.int64)

#: Source split directory -> split file written under OUT/splits/.
SPLITS = {"training": "train", "validation": "val"}

#: The OpenCV camera axes (x right, y down, z forward) in Waymo's camera frame (x forward, y left, z up).
WAYMO_FROM_OPENCV = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0],
                              [0.0, 0.0, 0.0, 1.0]])

_LIDAR = "[LiDARComponent]."
_LIDAR_CALIB = "[LiDARCalibrationComponent]."
_LIDAR_POSE = "[LiDARPoseComponent]."
_LIDAR_SEG = "[LiDARSegmentationLabelComponent]."
_PROJECTION = "[LiDARCameraProjectionComponent]."
_CAMERA = "[CameraImageComponent]."
_CAMERA_CALIB = "[CameraCalibrationComponent]."
_VEHICLE_POSE = "[VehiclePoseComponent]."
RETURNS = ("range_image_return1", "range_image_return2")
#: Which of a point's two stored camera projections to import: the first only (at most one camera per
#: point, as the reference uses them; the default), both (a point two cameras see is in both views,
#: and the view fusion picks), or none (the pinhole model, as without lidar_camera_projection, and
#: 8 bytes per point and view less on disk).
PROJECTIONS = ("first", "both", "none")
#: Channels (camera name, x, y) of the first and second projection in a lidar_camera_projection pixel.
PROJECTION_CHANNELS = ((0, 1, 2), (3, 4, 5))


@dataclass
class WaymoImportReport:
    """What an import did; skipped frames are counted by reason rather than silently dropped."""

    splits: dict[str, int] = field(default_factory=dict)  # split file -> scenes it lists
    segments: int = 0
    scenes: int = 0
    points: int = 0
    labelled_points: int = 0
    views: int = 0
    skipped_unlabelled: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> frames
    missing_cameras: int = 0
    image_crop_top: dict[str, int] = field(default_factory=dict)  # camera -> top rows removed
    cropped_views: int = 0
    stored_pixel_views: int = 0  # views with Waymo's per-point pixels (lidar_camera_projection)
    pinhole_views: int = 0  # views projected with the pinhole model: no such data, or projections="none"
    pinhole_frames: dict[str, int] = field(default_factory=dict)  # frames without the data: reason -> frames


class FrameSkipped(Exception):
    """A frame that cannot be imported (a missing pose row...): counted in the report, not fatal."""


# ------------------------------------------------------------------------------------ parquet access
class ComponentFile:
    """One component's parquet file of one segment, with tolerant column names and per-frame reads."""

    def __init__(self, path: Path, context: str, keys: Sequence[str]):
        pq = _pyarrow_parquet()
        if not path.is_file():
            raise SceneError(path, None, f"missing: the {path.parent.name}/ component has no file for "
                                         f"segment {context}")
        self.path = path
        try:
            self._file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise SceneError(path, None, f"cannot be read as a parquet file ({exc})") from None
        self._names: list[str] = self._file.schema_arrow.names
        table = self._read(self._file.read, [KEY_SEGMENT, *keys])
        ours = np.asarray(table.column(0).to_pylist(), dtype=object) == context
        if not ours.any():
            raise SceneError(path, KEY_SEGMENT, f"holds no rows of segment {context}")
        self.keys = {k: np.where(ours, table.column(i + 1).to_numpy(zero_copy_only=False), -1)
                     for i, k in enumerate(keys)}
        self._starts = np.cumsum([0] + [self._file.metadata.row_group(g).num_rows
                                        for g in range(self._file.num_row_groups)])
        self._cache: dict[tuple[int, tuple[str, ...]], object] = {}

    def column(self, name: str) -> str:
        """The file's spelling of a column: exact, else case-insensitive, else the same field under
        another component prefix; a clear error naming the file and the column otherwise."""
        if name in self._names:
            return name
        folded = [n for n in self._names if n.lower() == name.lower()]
        if not folded and name.startswith("[") and "]." in name:
            field_name = name.split("].", 1)[1].lower()
            folded = [n for n in self._names if n.startswith("[") and n.split("].", 1)[-1].lower() == field_name]
        if len(folded) == 1:
            return folded[0]
        close = difflib.get_close_matches(name, self._names, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else f"; the file has: {', '.join(self._names[:12])}"
        raise SceneError(self.path, name, f"column missing (is this a Waymo v2 {self.path.parent.name} file?){hint}")

    def has(self, name: str) -> bool:
        try:
            self.column(name)
        except SceneError:
            return False
        return True

    def rows(self, mask: np.ndarray, names: Sequence[str]):
        """A table of columns ``names`` (so named) of the rows where ``mask`` holds, in file order."""
        import pyarrow as pa

        index = np.flatnonzero(mask)
        groups = np.searchsorted(self._starts, index, side="right") - 1
        wanted = tuple(names)
        parts, cache = [], {}
        for g in np.unique(groups):
            key = (int(g), wanted)
            table = self._cache.get(key)
            if table is None:
                table = self._read(lambda columns, g=g: self._file.read_row_group(int(g), columns=columns), wanted)
            cache[key] = table
            parts.append(table.take(pa.array(index[groups == g] - self._starts[g])))
        self._cache = cache  # the row groups of the last request: a pass in file order decodes each once
        if not parts:
            return pa.table({n: pa.array([], pa.null()) for n in names})
        return pa.concat_tables(parts).rename_columns(list(names))

    def _read(self, read: Callable, names: Sequence[str]):
        columns = [self.column(n) for n in names]
        try:
            return read(columns=columns)
        except Exception as exc:
            raise SceneError(self.path, None, f"cannot be read ({exc})") from None


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DitrError("reading Waymo v2 parquet files needs pyarrow: pip install 'ditr[waymo]'") from None
    return pq


def _row_value(table, name: str, i: int):
    return table.column(name)[i].as_py()


def _transform(table, name: str, i: int, path: Path, where: str) -> np.ndarray:
    """A row-major 4x4 rigid transform, checked: finite, last row [0 0 0 1], invertible."""
    value = _row_value(table, name, i)
    if value is None or len(value) != 16:
        raise SceneError(path, name, f"{where}: expected the 16 values of a 4x4 transform, got {value!r:.80}")
    m = np.asarray(value, dtype=np.float64).reshape(4, 4)
    if not np.isfinite(m).all() or not np.allclose(m[3], [0, 0, 0, 1]) or abs(np.linalg.det(m[:3, :3])) < 1e-6:
        raise SceneError(path, name, f"{where}: not a finite invertible rigid transform: {m.round(4).tolist()}")
    return m


def _tensor(table, prefix: str, i: int, channels: int, path: Path, where: str) -> np.ndarray | None:
    """An (H, W, C) range image from its ``.values`` / ``.shape`` columns; None where the row has none."""
    values = table.column(prefix + ".values")[i]
    if not values.is_valid:
        return None
    shape = _row_value(table, prefix + ".shape", i)
    data = values.values.to_numpy(zero_copy_only=False)
    if shape is None or len(shape) != 3 or shape[2] < channels or int(np.prod(shape)) != data.size:
        raise SceneError(path, prefix + ".values",
                         f"{where}: {data.size} values do not fill the declared shape {shape} "
                         f"(H, W, >= {channels} channels)")
    if not np.isfinite(data).all():
        raise SceneError(path, prefix + ".values", f"{where}: contains NaN or infinite values")
    return data.reshape(shape)


# ------------------------------------------------------------------------------------------ geometry
def beam_inclinations(values: Sequence[float] | None, low: float | None, high: float | None, height: int) -> np.ndarray:
    """Inclination (radians) of each range-image row, row 0 the highest beam.

    ``values`` lists non-uniform beams (the TOP laser); without them the beams are uniform between
    ``low`` and ``high``, each row at the centre of its share of the interval.
    """
    if values:
        if len(values) != height:
            raise ValueError(f"{len(values)} beam inclinations for a range image of {height} rows")
        return np.sort(np.asarray(values, dtype=np.float64))[::-1]
    if low is None or high is None:
        raise ValueError("beam_inclination.min / .max are missing and there are no beam_inclination.values")
    return (low + (np.arange(height) + 0.5) / height * (high - low))[::-1]


def range_image_points(ranges: np.ndarray, inclination: np.ndarray, extrinsic: np.ndarray
                       ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Vehicle-frame points (M, 3) of the pixels with range > 0 and their (rows, cols).

    Column ``c`` looks along the vehicle azimuth ``pi (1 - 2 (c + 0.5) / W)``; the laser's own
    azimuth is that minus the yaw of its extrinsic (laser -> vehicle).
    """
    width = ranges.shape[1]
    yaw = np.arctan2(extrinsic[1, 0], extrinsic[0, 0])
    azimuth = np.pi * (1.0 - 2.0 * (np.arange(width) + 0.5) / width) - yaw
    rows, cols = np.nonzero(ranges > 0)
    r = ranges[rows, cols].astype(np.float64)
    incl, az = inclination[rows], azimuth[cols]
    local = np.stack([r * np.cos(incl) * np.cos(az), r * np.cos(incl) * np.sin(az), r * np.sin(incl)], axis=1)
    return local @ extrinsic[:3, :3].T + extrinsic[:3, 3], (rows, cols)


def euler_to_matrix(roll: np.ndarray, pitch: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations of Waymo's 3-2-1 Euler angles: ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    return np.stack([
        np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
        np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
        np.stack([-sp, cp * sr, cp * cr], -1),
    ], -2)


def compensate_motion(points: np.ndarray, pixel_pose: np.ndarray, frame_from_world: np.ndarray) -> np.ndarray:
    """Points (M, 3) in the vehicle frame at their firing time -> the frame's vehicle frame.

    ``pixel_pose`` (M, 6) = (roll, pitch, yaw, x, y, z), world_from_vehicle at each point's time.
    """
    rot = euler_to_matrix(pixel_pose[:, 0], pixel_pose[:, 1], pixel_pose[:, 2])
    world = np.einsum("mij,mj->mi", rot, points) + pixel_pose[:, 3:6]
    return world @ frame_from_world[:3, :3].T + frame_from_world[:3, 3]


# ------------------------------------------------------------------------------------------ segments
@dataclass
class _LaserCalibration:
    extrinsic: np.ndarray
    values: list[float] | None
    low: float | None
    high: float | None


@dataclass
class _CameraCalibration:
    intrinsics: np.ndarray
    extrinsic: np.ndarray  # vehicle <- Waymo camera
    width: int
    height: int


class _Segment:
    """The component files of one segment and its per-segment tables (calibrations, vehicle poses)."""

    def __init__(self, split_dir: Path, context: str, stored_projections: bool = True):
        def open_(component: str, *keys: str) -> ComponentFile:
            return ComponentFile(split_dir / component / f"{context}.parquet", context, keys)

        self.context = context
        self.calibration_path = split_dir / "lidar_calibration" / f"{context}.parquet"
        self.camera_calibration_path = split_dir / "camera_calibration" / f"{context}.parquet"
        self.lidar = open_("lidar", KEY_TIME, KEY_LASER)
        self.lidar_pose = open_("lidar_pose", KEY_TIME, KEY_LASER)
        self.camera = open_("camera_image", KEY_TIME, KEY_CAMERA)
        seg_file = split_dir / "lidar_segmentation" / f"{context}.parquet"
        # Not every segment has segmentation labels: without the file, its frames are all unlabelled.
        self.labels = open_("lidar_segmentation", KEY_TIME, KEY_LASER) if seg_file.is_file() else None
        # Without Waymo's projections the views fall back to the pinhole model (warned and counted
        # unless the user asked for it: ``stored_projections`` False).
        projection_file = split_dir / "lidar_camera_projection" / f"{context}.parquet"
        self.stored_projections = stored_projections
        self.projection = (open_("lidar_camera_projection", KEY_TIME, KEY_LASER)
                           if stored_projections and projection_file.is_file() else None)
        self.laser_calibrations = self._laser_calibrations(open_("lidar_calibration", KEY_LASER))
        self.camera_calibrations = self._camera_calibrations(open_("camera_calibration", KEY_CAMERA))
        self.vehicle_poses = self._vehicle_poses(open_("vehicle_pose", KEY_TIME))

    def frames(self) -> np.ndarray:
        return np.unique(self.lidar.keys[KEY_TIME][self.lidar.keys[KEY_TIME] >= 0])

    def labelled_frames(self) -> set[int]:
        if self.labels is None:
            return set()
        keys = self.labels.keys
        return set(keys[KEY_TIME][keys[KEY_LASER] == TOP_LASER].tolist())

    @staticmethod
    def _laser_calibrations(cf: ComponentFile) -> dict[int, _LaserCalibration]:
        p = _LIDAR_CALIB
        names = [KEY_LASER, p + "extrinsic.transform", p + "beam_inclination.min", p + "beam_inclination.max"]
        has_values = cf.has(p + "beam_inclination.values")  # optional in the schema (uniform beams)
        table = cf.rows(cf.keys[KEY_LASER] >= 0, names + ([p + "beam_inclination.values"] if has_values else []))
        out = {}
        for i in range(table.num_rows):
            laser = int(_row_value(table, KEY_LASER, i))
            out[laser] = _LaserCalibration(
                _transform(table, names[1], i, cf.path, f"laser {LASER_NAMES.get(laser, laser)}"),
                _row_value(table, p + "beam_inclination.values", i) if has_values else None,
                _row_value(table, names[2], i), _row_value(table, names[3], i))
        return out

    @staticmethod
    def _camera_calibrations(cf: ComponentFile) -> dict[int, _CameraCalibration]:
        p = _CAMERA_CALIB
        intr = [p + f"intrinsic.{k}" for k in ("f_u", "f_v", "c_u", "c_v")]
        table = cf.rows(cf.keys[KEY_CAMERA] >= 0,
                        [KEY_CAMERA, *intr, p + "extrinsic.transform", p + "width", p + "height"])
        out = {}
        for i in range(table.num_rows):
            camera = int(_row_value(table, KEY_CAMERA, i))
            where = f"camera {CAMERA_NAMES.get(camera, camera)}"
            fu, fv, cu, cv = (_row_value(table, n, i) for n in intr)
            width, height = _row_value(table, p + "width", i), _row_value(table, p + "height", i)
            if not all(isinstance(x, (int, float)) and np.isfinite(x) for x in (fu, fv, cu, cv)) or fu <= 0 or fv <= 0:
                raise SceneError(cf.path, p + "intrinsic", f"{where}: focal lengths must be positive and finite, "
                                                            f"got f_u={fu} f_v={fv} c_u={cu} c_v={cv}")
            if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
                raise SceneError(cf.path, p + "width", f"{where}: image size must be positive, got {width}x{height}")
            k = np.array([[fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]])
            out[camera] = _CameraCalibration(k, _transform(table, p + "extrinsic.transform", i, cf.path, where),
                                              width, height)
        return out

    @staticmethod
    def _vehicle_poses(cf: ComponentFile) -> dict[int, np.ndarray]:
        name = _VEHICLE_POSE + "world_from_vehicle.transform"
        table = cf.rows(cf.keys[KEY_TIME] >= 0, [KEY_TIME, name])
        return {int(t): _transform(table, name, i, cf.path, f"frame {t}")
                for i, t in enumerate(table.column(KEY_TIME).to_pylist())}


@dataclass
class _FramePoints:
    coord: np.ndarray
    strength: np.ndarray
    segment: np.ndarray | None
    projection: np.ndarray | None  # (N, 6) Waymo's camera projections of the points (PROJECTION_CHANNELS)
    pinhole_reason: str | None  # why ``projection`` is None although stored projections were asked for


def _frame_points(seg: _Segment, t: int, frame_from_world: np.ndarray, labelled: bool) -> _FramePoints:
    """All lasers' points of both returns in the frame's vehicle frame, with intensity and labels."""
    lidar = seg.lidar
    names = [KEY_LASER] + [f"{_LIDAR}{r}.{part}" for r in RETURNS for part in ("values", "shape")]
    table = lidar.rows(lidar.keys[KEY_TIME] == t, names)
    projection_table, projection_rows = _projection_rows(seg, t)
    coords, strengths, segments, projections = [], [], [], []
    collect = seg.projection is not None
    missing = "no lidar_camera_projection file" if seg.stored_projections and not collect else None
    for i in range(table.num_rows):
        laser = int(_row_value(table, KEY_LASER, i))
        where = f"frame {t} laser {LASER_NAMES.get(laser, laser)}"
        calib = seg.laser_calibrations.get(laser)
        if calib is None:
            raise SceneError(seg.calibration_path, KEY_LASER,
                             f"no calibration for laser {LASER_NAMES.get(laser, laser)}")
        pose = _pixel_pose(seg, t, where) if laser == TOP_LASER else None
        labels = _labels(seg, t, where) if labelled and laser == TOP_LASER else (None, None)
        for ret, label in zip(RETURNS, labels):
            image = _tensor(table, _LIDAR + ret, i, 4, lidar.path, where)
            if image is None:
                continue
            try:
                inclination = beam_inclinations(calib.values, calib.low, calib.high, image.shape[0])
            except ValueError as exc:
                raise SceneError(seg.calibration_path, _LIDAR_CALIB + "beam_inclination", f"{where}: {exc}") from None
            points, (rows, cols) = range_image_points(image[..., 0], inclination, calib.extrinsic)
            for extra, component in ((pose, seg.lidar_pose), (label, seg.labels)):
                if extra is not None and extra.shape[:2] != image.shape[:2]:
                    raise SceneError(component.path, ret, f"{where}: {extra.shape[:2]} pixels, the range image "
                                                          f"in {lidar.path.name} has {image.shape[:2]}")
            if pose is not None:
                points = compensate_motion(points, pose[rows, cols].astype(np.float64), frame_from_world)
            if collect:  # until a laser return without projections sends the frame to the pinhole model
                projection, missing = _laser_projection(seg, projection_table, projection_rows, laser, ret,
                                                        (rows, cols), image.shape[:2], where)
                if projection is None:
                    collect = False
                else:
                    projections.append(projection)
            coords.append(points.astype(np.float32))
            strengths.append(np.tanh(image[rows, cols, 1]).astype(np.float32))
            if labelled:
                segments.append(_map_labels(label[rows, cols, 1], seg, ret, where) if label is not None
                                else np.full(len(rows), -1, np.int64))
    if not coords or sum(len(c) for c in coords) == 0:
        raise FrameSkipped("no LiDAR points")
    return _FramePoints(np.concatenate(coords), np.concatenate(strengths),
                        np.concatenate(segments) if labelled else None,
                        np.concatenate(projections) if collect else None, missing)


def _projection_rows(seg: _Segment, t: int) -> tuple[object, dict[int, int]]:
    """The frame's lidar_camera_projection rows (both returns) and their row index per laser."""
    cf = seg.projection
    if cf is None:
        return None, {}
    names = [KEY_LASER] + [f"{_PROJECTION}{r}.{part}" for r in RETURNS for part in ("values", "shape")]
    table = cf.rows(cf.keys[KEY_TIME] == t, names)
    return table, {int(laser): i for i, laser in enumerate(table.column(KEY_LASER).to_pylist())}


def _laser_projection(seg: _Segment, table, index: dict[int, int], laser: int, ret: str,
                      pixels: tuple[np.ndarray, np.ndarray], shape: tuple[int, ...], where: str
                      ) -> tuple[np.ndarray | None, str | None]:
    """(M, 6) Waymo's camera projections of one laser return's points (its range-image ``pixels``),
    or (None, why they are absent)."""
    cf = seg.projection
    assert cf is not None  # _frame_points asks only when the segment has the file
    name = LASER_NAMES.get(laser, str(laser))
    row = index.get(laser)
    if row is None:
        return None, f"no lidar_camera_projection row for laser {name}"
    image = _tensor(table, _PROJECTION + ret, row, len(PROJECTION_CHANNELS) * 3, cf.path, where)
    if image is None:
        return None, f"no lidar_camera_projection {ret} for laser {name}"
    column = f"{_PROJECTION}{ret}.values"
    if image.shape[:2] != shape:
        raise SceneError(cf.path, column, f"{where}: {image.shape[:2]} pixels, the range image in "
                                          f"{seg.lidar.path.name} has {shape}")
    projection = image[pixels][:, :6].astype(np.float32)
    cameras = projection[:, [c for c, _, _ in PROJECTION_CHANNELS]]
    bad = (cameras < 0) | (cameras != np.round(cameras))
    if bad.any():
        raise SceneError(cf.path, column, f"{where}: camera name {cameras[bad][0]:g} is not a Waymo CameraName "
                                          "(0 = no projection, 1-5 = FRONT, FRONT_LEFT, FRONT_RIGHT, SIDE_LEFT, "
                                          "SIDE_RIGHT)")
    return projection, None


def stored_pixels(projection: np.ndarray, camera: int, width: int, height: int, crop_top: int = 0,
                  first_only: bool = False) -> np.ndarray:
    """(N, 2) float32 pixels of the points in camera ``camera`` from their stored projections (N, 6),
    NaN where the point has none (:data:`PROJECTION_CHANNELS`).

    Pixels are kept as Waymo stores them (x along the width, y along the height, 0 = the first pixel's
    edge, the scene format's convention), moved up by the ``crop_top`` rows removed from the image; a
    pixel outside the ``width`` x ``height`` image (the removed rows) is no pixel. The first projection
    wins should both name the camera.
    """
    pixels = np.full((len(projection), 2), np.nan, np.float32)
    for name, x, y in (PROJECTION_CHANNELS[:1] if first_only else PROJECTION_CHANNELS[::-1]):
        hit = projection[:, name] == camera
        pixels[hit] = projection[hit][:, [x, y]]
    pixels[:, 1] -= crop_top
    with np.errstate(invalid="ignore"):
        inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
    pixels[~inside] = np.nan
    return pixels


def _pixel_pose(seg: _Segment, t: int, where: str) -> np.ndarray:
    cf = seg.lidar_pose
    table = cf.rows((cf.keys[KEY_TIME] == t) & (cf.keys[KEY_LASER] == TOP_LASER),
                    [f"{_LIDAR_POSE}{RETURNS[0]}.{part}" for part in ("values", "shape")])
    pose = _tensor(table, _LIDAR_POSE + RETURNS[0], 0, 6, cf.path, where) if table.num_rows else None
    if pose is None:
        raise FrameSkipped("no TOP pixel pose")
    return pose


def _labels(seg: _Segment, t: int, where: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    cf = seg.labels
    assert cf is not None  # only called for labelled frames
    table = cf.rows((cf.keys[KEY_TIME] == t) & (cf.keys[KEY_LASER] == TOP_LASER),
                    [f"{_LIDAR_SEG}{r}.{part}" for r in RETURNS for part in ("values", "shape")])
    return tuple(_tensor(table, _LIDAR_SEG + r, 0, 2, cf.path, where) for r in RETURNS)  # type: ignore[return-value]


def _map_labels(semantic: np.ndarray, seg: _Segment, ret: str, where: str) -> np.ndarray:
    bad = (semantic < 0) | (semantic >= len(LABEL_MAP))
    if bad.any():
        assert seg.labels is not None
        raise SceneError(seg.labels.path, f"{_LIDAR_SEG}{ret}.values",
                         f"{where}: semantic class {int(semantic[bad][0])} is not a Waymo Segmentation.Type (0-22)")
    return LABEL_MAP[semantic.astype(np.int64)]


def _frame_views(seg: _Segment, t: int, frame_from_world: np.ndarray, tmp: Path, crop_front_top: int,
                 projection: np.ndarray | None = None, first_only: bool = False) -> tuple[list[View], int]:
    """The frame's camera images as views (fixed camera order), and how many calibrated cameras are missing.

    Front cameras lose their top ``crop_front_top`` rows; an image that cannot be decoded for the crop
    counts as missing, like one whose header cannot be read. With the points' stored ``projection``
    each view carries their pixels (:func:`stored_pixels`).
    """
    cf = seg.camera
    image_col, pose_col = _CAMERA + "image", _CAMERA + "pose.transform"
    table = cf.rows(cf.keys[KEY_TIME] == t, [KEY_CAMERA, image_col, pose_col])
    cameras = [int(c) for c in table.column(KEY_CAMERA).to_pylist()]
    views = []
    for i in np.argsort(cameras, kind="stable"):
        camera, name = cameras[i], CAMERA_NAMES.get(cameras[i], f"CAMERA_{cameras[i]}")
        calib = seg.camera_calibrations.get(camera)
        if calib is None:
            raise SceneError(seg.camera_calibration_path, KEY_CAMERA,
                             f"no calibration for camera {name}, which has images")
        jpeg = _row_value(table, image_col, int(i))
        size = _jpeg_size(jpeg)
        if size is None:
            continue  # undecodable image: counted as a missing camera
        if size != (calib.width, calib.height):
            raise SceneError(cf.path, image_col, f"frame {t} camera {name}: image is {size[0]}x{size[1]}, "
                                                 f"the calibration says {calib.width}x{calib.height}")
        world_from_vehicle = _transform(table, pose_col, int(i), cf.path, f"frame {t} camera {name}")
        crop = crop_front_top if name in FRONT_CAMERAS else 0
        if crop:
            jpeg = top_cropped_jpeg(jpeg, crop)
            if jpeg is None:
                continue
        path = tmp / f"{name}.jpg"
        path.write_bytes(jpeg)
        pixels = (None if projection is None else
                  stored_pixels(projection, camera, calib.width, calib.height - crop, crop, first_only))
        views.append(View(name=name, width=calib.width, height=calib.height - crop,
                          intrinsics=crop_intrinsics(calib.intrinsics, crop),
                          cam_to_world=frame_from_world @ world_from_vehicle @ calib.extrinsic @ WAYMO_FROM_OPENCV,
                          image_path=path, pixels=pixels))
    return views, len(seg.camera_calibrations) - len(views)


def _jpeg_size(data: bytes | None) -> tuple[int, int] | None:
    from PIL import Image

    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            return im.size
    except Exception:  # PIL raises several types for damaged images
        return None


def crop_intrinsics(intrinsics: np.ndarray, rows: int) -> np.ndarray:
    """The intrinsics of an image without its top ``rows`` rows: pixel row v becomes v - rows, so only
    the principal point's c_v moves (focal lengths, c_u and the pose are unchanged)."""
    k = np.array(intrinsics, dtype=np.float64)
    k[1, 2] -= rows
    return k


def top_cropped_jpeg(data: bytes, rows: int) -> bytes | None:
    """The JPEG ``data`` without its top ``rows`` rows, re-encoded at quality 95; None if undecodable.

    Why re-encode, and as JPEG: a crop inside the compressed data is lossless only at an offset on the
    8- or 16-row block grid, which the reference's 394 rows are not. PNG would be lossless but, measured on
    1920x886 crops of photo-like 1920x1280 JPEGs (docs/datasets.md), 4x larger than JPEG 95 (1.75-1.9 MB
    vs 0.44-0.48 MB, about the size of the whole source JPEG) and 25-35x slower (0.7-0.9 s to encode vs
    23-32 ms to decode, crop and encode), three times per frame. JPEG 95 is 47 dB PSNR from the decoded
    source; an even crop keeps the 4:2:0 chroma grid aligned.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            cropped = im.crop((0, rows, im.width, im.height))
            cropped.load()
    except Exception:  # PIL raises several types for damaged images
        return None
    buf = io.BytesIO()
    cropped.save(buf, format="JPEG", quality=CROP_JPEG_QUALITY)
    return buf.getvalue()


def check_crop(seg: _Segment, crop_front_top: int) -> None:
    """A crop must leave rows in every front camera: a clear error naming the option otherwise."""
    for camera, calib in seg.camera_calibrations.items():
        name = CAMERA_NAMES.get(camera)
        if name in FRONT_CAMERAS and crop_front_top >= calib.height:
            raise DitrError(f"--crop-front-top {crop_front_top} removes every row of camera {name}, whose "
                            f"images have {calib.height} rows ({seg.camera_calibration_path}): use fewer rows, "
                            "or 0 for no crop")


def import_frame(seg: _Segment, t: int, out_dir: Path, labelled: bool, report: WaymoImportReport,
                 crop_front_top: int = DEFAULT_CROP_FRONT_TOP, projections: str = "first") -> str | None:
    """Write one frame as a scene; raises FrameSkipped for a frame without a pose or without points.

    Cropped front cameras are listed in ``meta.json`` as ``image_crop_top`` (camera -> rows), since
    views.json has no crop field: the images and intrinsics written are already the cropped ones.
    Returns why the views use the pinhole model although stored projections were asked for (the
    data is absent), else None.
    """
    frame_pose = seg.vehicle_poses.get(t)
    if frame_pose is None:
        raise FrameSkipped("no vehicle pose")
    frame_from_world = np.linalg.inv(frame_pose)
    points = _frame_points(seg, t, frame_from_world, labelled)
    attributes = {"strength": points.strength}
    meta = {"dataset": "waymo", "name": out_dir.name, "class_names": CLASS_NAMES, "ignore_index": -1,
            "waymo": {"context": seg.context, "timestamp_micros": t, "labelled": labelled},
            "acquisition": {"kind": "lidar"}}
    top = seg.laser_calibrations.get(TOP_LASER)
    if top is not None:  # the short-range lasers' points are few; the TOP laser's cells size the splats
        meta["acquisition"]["sensor_to_scene"] = top.extrinsic.tolist()
    if labelled:
        attributes["segment"] = points.segment
        meta["segment"] = "segment"
        report.labelled_points += int((points.segment >= 0).sum())
    with tempfile.TemporaryDirectory(prefix=".waymo-", dir=out_dir.parent) as tmp:
        views, missing = _frame_views(seg, t, frame_from_world, Path(tmp), crop_front_top, points.projection,
                                      projections == "first")
        cropped = {v.name: crop_front_top for v in views if crop_front_top and v.name in FRONT_CAMERAS}
        if cropped:
            meta["image_crop_top"] = cropped
        Scene(coord=points.coord, attributes=attributes, views=views, meta=meta).save(out_dir)
    report.scenes += 1
    report.points += len(points.coord)
    report.views += len(views)
    report.missing_cameras += missing
    report.image_crop_top.update(cropped)
    report.cropped_views += len(cropped)
    if points.projection is None:
        report.pinhole_views += len(views)
    else:
        report.stored_pixel_views += len(views)
    return points.pinhole_reason


def import_segment(split_dir: Path, context: str, out: Path, report: WaymoImportReport, *,
                   labelled_only: bool = True, frame_step: int = 1, max_frames: int | None = None,
                   crop_front_top: int = DEFAULT_CROP_FRONT_TOP, projections: str = "first") -> list[str]:
    """Import the chosen frames of one segment; returns the names of the scenes written. Frames whose
    views fall back to the pinhole model are counted in the report and named in one warning."""
    seg = _Segment(split_dir, context, stored_projections=projections != "none")
    check_crop(seg, crop_front_top)
    frames = seg.frames()
    labelled = seg.labelled_frames()
    if labelled_only:
        keep = np.array([t in labelled for t in frames.tolist()], dtype=bool)
        report.skipped_unlabelled += int((~keep).sum())
        frames = frames[keep]
    frames = frames[::frame_step][:max_frames]
    names, skipped, pinhole = [], Counter(report.skipped), Counter[str]()
    for t in frames.tolist():
        name = f"{context}_{t}"
        try:
            reason = import_frame(seg, int(t), out / name, t in labelled, report, crop_front_top, projections)
        except FrameSkipped as exc:
            skipped[str(exc)] += 1
            continue
        names.append(name)
        if reason is not None:
            pinhole[reason] += 1
    report.skipped = dict(skipped)
    report.pinhole_frames = dict(Counter(report.pinhole_frames) + pinhole)
    report.segments += 1
    if pinhole:
        why = "; ".join(f"{reason}: {count}" for reason, count in sorted(pinhole.items()))
        warnings.warn(f"Waymo segment {context}: {sum(pinhole.values())} of {len(names)} frames have no stored "
                      f"camera projections ({why}); their views use the pinhole model of the calibration, without "
                      "lens distortion and rolling shutter (docs/datasets.md, Waymo)", stacklevel=2)
    return names


REQUIRED_COMPONENTS = ("lidar", "lidar_calibration", "lidar_pose", "camera_image", "camera_calibration", "vehicle_pose")


def find_splits(src: Path) -> list[tuple[str, Path]]:
    """(split file name, directory) pairs: SRC/training and SRC/validation, or SRC itself as one split."""
    if (src / "lidar").is_dir():
        return [(SPLITS.get(src.name, src.name), src)]
    found = [(name, src / d) for d, name in SPLITS.items() if (src / d).is_dir()]
    if not found:
        raise DitrError(f"{src}: no Waymo v2 split found (expected SRC/training/lidar/<context>.parquet, "
                        "SRC/validation/..., or a split directory holding lidar/ itself)")
    return found


def _segments(split_dir: Path, labelled_only: bool) -> list[str]:
    needed = REQUIRED_COMPONENTS + (("lidar_segmentation",) if labelled_only else ())
    missing = [c for c in needed if not (split_dir / c).is_dir()]
    if missing:
        hint = "; --no-labelled-only imports without lidar_segmentation/" if "lidar_segmentation" in missing else ""
        raise DitrError(f"{split_dir}: component directories missing: {', '.join(c + '/' for c in missing)} "
                        f"(download them from the v2 perception bucket, see docs/datasets.md{hint})")
    contexts = sorted(p.stem for p in (split_dir / "lidar").glob("*.parquet"))
    if not contexts:
        raise DitrError(f"{split_dir / 'lidar'}: no <context>.parquet segment files")
    return contexts


def import_waymo(src: str | Path, out: str | Path, *, labelled_only: bool = True, frame_step: int = 1,
                 max_frames: int | None = None, crop_front_top: int = DEFAULT_CROP_FRONT_TOP,
                 projections: str = "first", progress: Progress | None = None) -> WaymoImportReport:
    """Import every segment of SRC's splits into OUT/<context>_<timestamp>/ plus OUT/splits/<split>.txt.

    ``crop_front_top`` rows are removed from the top of the front cameras' images (394 in
    docs/design.md#views-per-dataset; 0 keeps every image as it is). ``progress(done, total)`` counts
    segments. Each split file lists this import's scenes plus those an earlier import listed that are
    still in OUT, so that imports of parts of a split add up. ``projections`` (:data:`PROJECTIONS`)
    picks which of each point's two stored camera projections the views carry.
    """
    src, out = Path(src), Path(out)
    check_sampling(frame_step, max_frames)
    if crop_front_top < 0:
        raise DitrError(f"--crop-front-top must be 0 (no crop) or a positive number of rows, got {crop_front_top}")
    if projections not in PROJECTIONS:
        raise DitrError(f"--projections must be one of {', '.join(PROJECTIONS)}, got {projections!r}")
    if not src.is_dir():
        raise DitrError(f"{src}: source directory does not exist")
    _pyarrow_parquet()
    plan = [(name, split_dir, _segments(split_dir, labelled_only)) for name, split_dir in find_splits(src)]
    out.mkdir(parents=True, exist_ok=True)
    report = WaymoImportReport()
    done, total = 0, sum(len(contexts) for *_, contexts in plan)
    for name, split_dir, contexts in plan:
        scenes = []
        for context in contexts:
            scenes += import_segment(split_dir, context, out, report, labelled_only=labelled_only,
                                     frame_step=frame_step, max_frames=max_frames, crop_front_top=crop_front_top,
                                     projections=projections)
            done += 1
            if progress is not None:
                progress(done, total)
        report.splits[name] = write_split(out, name, sorted({*listed_scenes(out, name), *scenes}))
    return report
