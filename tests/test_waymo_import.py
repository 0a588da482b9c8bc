"""Waymo v2 importer on a generated segment in the native parquet layout, with analytic geometry.

The fixture: one segment, two frames (the first labelled), a TOP laser (8x32, non-uniform beams, yawed
extrinsic, per-pixel poses of a car moving during the sweep) and a FRONT laser (4x16, uniform beams),
both looking at a wall at x = 10 m of the frame's vehicle frame, a FRONT camera (1920x1280) and a
SIDE_RIGHT camera (1920x886, turned 30 degrees right so that it shares some points with FRONT) with
images, plus a calibrated SIDE_LEFT camera without images. The cameras have radial lens distortion,
which Waymo's per-point projections (``lidar_camera_projection``) include and the pinhole model does
not. Every expected point is computed from the wall, and every expected pixel from the camera's
definition, not from the importer's formulas.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pc = pytest.importorskip("pyarrow.compute")

from ditr.cli import main  # noqa: E402
from ditr.configs import preset_path  # noqa: E402
from ditr.errors import DitrError, SceneError  # noqa: E402
from ditr.io.waymo import (CLASS_NAMES, DEFAULT_CROP_FRONT_TOP, LABEL_MAP, SEGMENTATION_TYPES,  # noqa: E402
                           import_waymo, stored_pixels)
from ditr.projection import ProjectionConfig, project_points, project_scene  # noqa: E402
from ditr.scene import Scene  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

CONTEXT = "1005081002024129653_5313_150_5333_150"
T0, T1 = 1_510_593_600_140_000, 1_510_593_600_240_000
WALL_X, BACK_WALL_X = 10.0, 15.0
TOP_SHAPE, FRONT_SHAPE = (8, 32), (4, 16)
TOP_INCLINATIONS = np.radians([-17.0, -12.0, -8.0, -5.0, -3.0, -1.0, 0.5, 2.0])  # ascending, as Waymo stores them
FRONT_INCLINATION = (-0.2, 0.2)
CAMERA = {"f": 2000.0, "cx": 960.0, "cy": 640.0, "width": 1920, "height": 1280, "position": (1.5, 0.0, 1.8)}  # FRONT
SIDE = {"f": 2000.0, "cx": 960.0, "cy": 443.0, "width": 1920, "height": 886}  # SIDE_LEFT, SIDE_RIGHT
CAMERA_DRIFT = 0.3  # the car moved 0.3 m forward between the frame pose and the camera exposure
CAMERAS = {  # Waymo camera id -> (intrinsics and size, extrinsic vehicle <- camera, has images)
    1: (CAMERA, None, True),  # FRONT; extrinsic: a translation to CAMERA["position"]
    4: (SIDE, (np.pi / 2, (1.0, 1.0, 1.8)), False),  # SIDE_LEFT: calibrated, no images
    5: (SIDE, (-np.pi / 6, (1.0, -1.0, 1.8)), True),  # SIDE_RIGHT
}
DISTORTION = (-0.2, 0.05)  # OpenCV radial k1, k2 of every camera: up to ~60 px at the FRONT image's corners
KNOWN_POINT = np.array([10.0, 1.0, 2.3])  # in the frame's vehicle frame, seen by FRONT
DESIGN_CROP = 394  # docs/design.md#views-per-dataset: front cameras top-cropped by 394 rows (1280 -> 886)
MOTION_PER_COLUMN = (0.02, 0.002)  # TOP sweep: metres forward and radians of yaw per column


# ------------------------------------------------------------------------------ analytic helpers
def euler(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rotation of 3-2-1 Euler angles, composed from elementary rotations."""
    def axis(i, a):
        c, s = np.cos(a), np.sin(a)
        j, k = [(1, 2), (2, 0), (0, 1)][i]
        r = np.eye(3)
        r[j, j], r[j, k], r[k, j], r[k, k] = c, -s, s, c
        return r
    return axis(2, yaw) @ axis(1, pitch) @ axis(0, roll)


def rigid(rot=None, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = np.eye(3) if rot is None else rot, t
    return m


def to_euler(m: np.ndarray) -> tuple[float, float, float]:
    r = m[:3, :3]
    return float(np.arctan2(r[2, 1], r[2, 2])), float(-np.arcsin(r[2, 0])), float(np.arctan2(r[1, 0], r[0, 0]))


FRAME_POSE = rigid(euler(0.02, -0.03, 1.2), (1200.0, -350.0, 12.0))  # world <- vehicle, per frame
LASERS = {  # laser id -> (extrinsic yaw, position, shape, inclinations top row first)
    1: (np.radians(30.0), (1.0, 0.0, 2.0), TOP_SHAPE, TOP_INCLINATIONS[::-1]),
    2: (np.radians(-20.0), (4.0, 0.0, 0.5), FRONT_SHAPE,
        FRONT_INCLINATION[0] + (np.arange(4)[::-1] + 0.5) / 4 * (FRONT_INCLINATION[1] - FRONT_INCLINATION[0])),
}


def sweep_motion(col: int) -> np.ndarray:
    """The TOP laser's vehicle pose at column ``col`` relative to the frame pose."""
    return rigid(euler(0.0, 0.0, MOTION_PER_COLUMN[1] * col), (MOTION_PER_COLUMN[0] * col, 0.0, 0.0))


def laser_view(laser: int):
    """Per pixel: vehicle-frame ray direction (H, W, 3) of laser ``laser``, and its origin."""
    _, origin, (h, w), incl = LASERS[laser]
    azimuth = np.pi * (1 - 2 * (np.arange(w) + 0.5) / w)  # the vehicle azimuth each column looks at
    a, i = np.meshgrid(azimuth, incl)
    return np.stack([np.cos(i) * np.cos(a), np.cos(i) * np.sin(a), np.sin(i)], -1), np.array(origin)


def wall_ranges(laser: int, wall_x: float) -> np.ndarray:
    """Range image of a wall at ``wall_x`` in the (sweep-local) vehicle frame, 0 where the ray misses."""
    d, origin = laser_view(laser)
    with np.errstate(divide="ignore"):
        r = np.where(d[..., 0] > 0.3, (wall_x - origin[0]) / d[..., 0], 0.0)
    return np.where(r < 60.0, r, 0.0)


def expected_points(laser: int, ranges: np.ndarray, motion: bool) -> tuple[np.ndarray, np.ndarray]:
    """Points of the valid pixels in the frame's vehicle frame, and their flat pixel index."""
    d, origin = laser_view(laser)
    rows, cols = np.nonzero(ranges > 0)
    p = origin + ranges[rows, cols, None] * d[rows, cols]
    if motion:
        p = np.stack([(sweep_motion(c) @ np.append(q, 1.0))[:3] for q, c in zip(p, cols)])
    return p, rows * ranges.shape[1] + cols


def semantic_of(pixel: np.ndarray) -> np.ndarray:
    return pixel % 23


def front_pixel(point: np.ndarray, distorted: bool = False) -> tuple[float, float, float]:
    """(u, v, depth) of a vehicle-frame point in the stored (uncropped) FRONT image, from the camera's
    definition: Waymo camera frame x forward, y left, z up, at the exposure pose (the car drifted);
    the pinhole pixel, or with ``distorted`` the one the lens (DISTORTION) really images it at."""
    q = point - (np.array(CAMERA["position"]) + [CAMERA_DRIFT, 0, 0])
    x, y = -q[1] / q[0], -q[2] / q[0]
    if distorted:
        r2 = x * x + y * y
        x, y = (c * (1 + DISTORTION[0] * r2 + DISTORTION[1] * r2 * r2) for c in (x, y))
    return CAMERA["f"] * x + CAMERA["cx"], CAMERA["f"] * y + CAMERA["cy"], q[0]


def camera_pixels(camera: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distorted pixels (M, 2) of vehicle-frame points in a camera at its exposure pose, and whether
    each lands in the image (in front of the camera, inside width x height)."""
    c = CAMERAS[camera][0]
    camera_from_frame = np.linalg.inv(rigid(t=(CAMERA_DRIFT, 0.0, 0.0)) @ camera_extrinsic(camera))
    q = points @ camera_from_frame[:3, :3].T + camera_from_frame[:3, 3]
    ahead = q[:, 0] > 0.1
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = -q[:, 1] / q[:, 0], -q[:, 2] / q[:, 0]
    r2 = x * x + y * y
    scale = 1 + DISTORTION[0] * r2 + DISTORTION[1] * r2 * r2
    uv = np.stack([c["f"] * x * scale + c["cx"], c["f"] * y * scale + c["cy"]], 1)
    inside = ahead & (r2 < 1.0) & (uv[:, 0] >= 0) & (uv[:, 0] < c["width"]) & (uv[:, 1] >= 0) & (uv[:, 1] < c["height"])
    return uv, inside


def waymo_projection(points: np.ndarray) -> np.ndarray:
    """(M, 6) lidar_camera_projection channels of points as the dataset defines them: the first two
    calibrated cameras that see a point, in camera-name order, each (camera name, x, y); 0 = none."""
    out = np.zeros((len(points), 6), np.float32)
    count = np.zeros(len(points), np.int64)
    for camera in sorted(CAMERAS):  # FRONT (1) < ... < SIDE_RIGHT (5), the order the format picks in
        uv, inside = camera_pixels(camera, points)
        for slot in (0, 1):
            take = inside & (count == slot)
            out[take, 3 * slot] = camera
            out[take, 3 * slot + 1:3 * slot + 3] = uv[take]
        count += inside
    return out


# ------------------------------------------------------------------------------ fixture writer
def transform_type():
    return pa.list_(pa.float64(), 16)


def image_columns(prefix: str, images: list[np.ndarray | None], dtype) -> dict:
    return {f"{prefix}.values": pa.array([None if im is None else im.ravel().tolist() for im in images],
                                         pa.list_(dtype)),
            f"{prefix}.shape": pa.array([None if im is None else list(im.shape) for im in images],
                                        pa.list_(pa.int32(), 3))}


def write_component(root: Path, component: str, columns: dict, omit: dict, row_group_size: int | None = None):
    columns = {k: v for k, v in columns.items() if k != omit.get(component)}
    (root / component).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), root / component / f"{CONTEXT}.parquet", row_group_size=row_group_size)


@functools.cache
def camera_jpeg(camera: int) -> bytes:
    """A smooth colour ramp (red grows with the row, green with the column), so that each row's content
    is recognisable after a crop; FRONT has a white 15x15 square centred on KNOWN_POINT's pixel."""
    c = CAMERAS[camera][0]
    rows, cols = np.mgrid[0:c["height"], 0:c["width"]]
    image = np.stack([30 + 180 * rows / c["height"], 30 + 180 * cols / c["width"], np.full(rows.shape, 60.0 * camera)],
                     -1)
    if camera == 1:
        u, v, _ = np.round(front_pixel(KNOWN_POINT, distorted=True)).astype(int)
        image[v - 7:v + 8, u - 7:u + 8] = 255
    buf = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def camera_extrinsic(camera: int) -> np.ndarray:
    pose = CAMERAS[camera][1]
    return rigid(t=CAMERA["position"]) if pose is None else rigid(euler(0, 0, pose[0]), pose[1])


def write_segment(root: Path, omit: dict | None = None) -> dict:
    """Write the segment under root/<component>/; returns the analytic expectations: per laser, per
    return ((frame-vehicle points, flat pixel index), intensity image), and under "projection" per
    laser the points' (M, 6) lidar_camera_projection channels of both returns, in the same order."""
    omit = omit or {}
    lidar_rows, expected, projections = [], {}, []
    for t in (T0, T1):
        for laser in (1, 2):
            h, w = LASERS[laser][2]
            r1 = wall_ranges(laser, WALL_X)
            r2 = np.where(np.arange(h)[:, None] == 0, wall_ranges(laser, BACK_WALL_X), 0.0) * (r1 > 0)
            intensity = np.add.outer(0.1 * np.arange(h), 0.01 * np.arange(w))
            ri = [np.stack([r, intensity, np.zeros_like(r), np.zeros_like(r)], -1).astype(np.float32) for r in (r1, r2)]
            lidar_rows.append((t, laser, ri))
            points = [expected_points(laser, r, laser == 1) for r in (r1, r2)]
            images = []
            for p, pixel in points:  # both frames see the same wall, so they get the same projections
                image = np.zeros((h * w, 6), np.float32)
                image[pixel] = waymo_projection(p)
                images.append(image.reshape(h, w, 6))
            projections.append((t, laser, images))
            if t == T0:
                expected[laser] = [(p, intensity) for p in points]
                expected.setdefault("projection", {})[laser] = [image.reshape(-1, 6)[pixel]
                                                                for image, (_, pixel) in zip(images, points)]
    write_component(root, "lidar", {
        "key.segment_context_name": pa.array([CONTEXT] * len(lidar_rows)),
        "key.frame_timestamp_micros": pa.array([t for t, _, _ in lidar_rows], pa.int64()),
        "key.laser_name": pa.array([laser for _, laser, _ in lidar_rows], pa.int8()),
        **image_columns("[LiDARComponent].range_image_return1", [ri[0] for *_, ri in lidar_rows], pa.float32()),
        **image_columns("[LiDARComponent].range_image_return2", [ri[1] for *_, ri in lidar_rows], pa.float32()),
    }, omit, row_group_size=3)  # frames straddle row groups
    write_component(root, "lidar_camera_projection", {
        "key.segment_context_name": pa.array([CONTEXT] * len(projections)),
        "key.frame_timestamp_micros": pa.array([t for t, _, _ in projections], pa.int64()),
        "key.laser_name": pa.array([laser for _, laser, _ in projections], pa.int8()),
        **image_columns("[LiDARCameraProjectionComponent].range_image_return1", [p[0] for *_, p in projections],
                        pa.float32()),
        **image_columns("[LiDARCameraProjectionComponent].range_image_return2", [p[1] for *_, p in projections],
                        pa.float32()),
    }, omit)

    write_component(root, "lidar_calibration", {
        "key.segment_context_name": pa.array([CONTEXT] * 2),
        "key.laser_name": pa.array([1, 2], pa.int8()),
        "[LiDARCalibrationComponent].extrinsic.transform": pa.array(
            [rigid(euler(0, 0, LASERS[k][0]), LASERS[k][1]).ravel().tolist() for k in (1, 2)], transform_type()),
        "[LiDARCalibrationComponent].beam_inclination.min": pa.array([TOP_INCLINATIONS[0], FRONT_INCLINATION[0]]),
        "[LiDARCalibrationComponent].beam_inclination.max": pa.array([TOP_INCLINATIONS[-1], FRONT_INCLINATION[1]]),
        "[LiDARCalibrationComponent].beam_inclination.values": pa.array([TOP_INCLINATIONS.tolist(), None],
                                                                         pa.list_(pa.float64())),
    }, omit)

    poses = []
    for _timestamp in (T0, T1):  # both frames get the same pixel poses
        image = np.zeros(TOP_SHAPE + (6,), np.float32)
        for col in range(TOP_SHAPE[1]):
            pixel_pose = FRAME_POSE @ sweep_motion(col)
            image[:, col] = [*to_euler(pixel_pose), *pixel_pose[:3, 3]]
        poses.append(image)
    write_component(root, "lidar_pose", {
        "key.segment_context_name": pa.array([CONTEXT] * 2),
        "key.frame_timestamp_micros": pa.array([T0, T1], pa.int64()),
        "key.laser_name": pa.array([1, 1], pa.int8()),
        **image_columns("[LiDARPoseComponent].range_image_return1", poses, pa.float32()),
    }, omit)

    pixel = np.arange(TOP_SHAPE[0] * TOP_SHAPE[1]).reshape(TOP_SHAPE)
    labels = [np.stack([np.where(semantic_of(pixel) < 8, 0, 100 + pixel), semantic_of(pixel)], -1).astype(np.int32),
              np.stack([np.zeros(TOP_SHAPE), np.full(TOP_SHAPE, 18)], -1).astype(np.int32)]  # return 2: road
    write_component(root, "lidar_segmentation", {
        "key.segment_context_name": pa.array([CONTEXT]),
        "key.frame_timestamp_micros": pa.array([T0], pa.int64()),
        "key.laser_name": pa.array([1], pa.int8()),
        **image_columns("[LiDARSegmentationLabelComponent].range_image_return1", [labels[0]], pa.int32()),
        **image_columns("[LiDARSegmentationLabelComponent].range_image_return2", [labels[1]], pa.int32()),
    }, omit)

    calibrated = list(CAMERAS)
    intrinsic = {"f_u": "f", "f_v": "f", "c_u": "cx", "c_v": "cy"}
    write_component(root, "camera_calibration", {
        "key.segment_context_name": pa.array([CONTEXT] * len(calibrated)),
        "key.camera_name": pa.array(calibrated, pa.int8()),
        **{f"[CameraCalibrationComponent].intrinsic.{k}": pa.array([CAMERAS[i][0][v] for i in calibrated], pa.float64())
           for k, v in intrinsic.items()},
        **{f"[CameraCalibrationComponent].intrinsic.{k}": pa.array([value] * len(calibrated), pa.float64())
           for k, value in zip(("k1", "k2", "p1", "p2", "k3"), (*DISTORTION, 0.0, 0.0, 0.0))},
        "[CameraCalibrationComponent].extrinsic.transform": pa.array(
            [camera_extrinsic(i).ravel().tolist() for i in calibrated], transform_type()),
        "[CameraCalibrationComponent].width": pa.array([CAMERAS[i][0]["width"] for i in calibrated], pa.int32()),
        "[CameraCalibrationComponent].height": pa.array([CAMERAS[i][0]["height"] for i in calibrated], pa.int32()),
    }, omit)
    camera_pose = FRAME_POSE @ rigid(t=(CAMERA_DRIFT, 0.0, 0.0))
    shots = [(t, i) for t in (T0, T1) for i in calibrated if CAMERAS[i][2]]
    write_component(root, "camera_image", {
        "key.segment_context_name": pa.array([CONTEXT] * len(shots)),
        "key.frame_timestamp_micros": pa.array([t for t, _ in shots], pa.int64()),
        "key.camera_name": pa.array([i for _, i in shots], pa.int8()),
        "[CameraImageComponent].image": pa.array([camera_jpeg(i) for _, i in shots], pa.binary()),
        "[CameraImageComponent].pose.transform": pa.array([camera_pose.ravel().tolist()] * len(shots),
                                                          transform_type()),
    }, omit)
    write_component(root, "vehicle_pose", {
        "key.segment_context_name": pa.array([CONTEXT] * 2),
        "key.frame_timestamp_micros": pa.array([T0, T1], pa.int64()),
        "[VehiclePoseComponent].world_from_vehicle.transform": pa.array([FRAME_POSE.ravel().tolist()] * 2,
                                                                        transform_type()),
    }, omit)
    return expected


@pytest.fixture
def waymo_src(tmp_path) -> tuple[Path, dict]:
    src = tmp_path / "waymo_v2"
    expected = write_segment(src / "training")
    return src, expected


def sort_rows(points: np.ndarray, *extra: np.ndarray):
    order = np.lexsort(np.round(points, 4).T[::-1])
    return (points[order], *(e[order] for e in extra))


# ------------------------------------------------------------------------------------------- tests
def test_label_map_matches_the_preset():
    preset = yaml.safe_load(preset_path("waymo").read_text())["dataset"]  # (load_preset imports the models)
    assert CLASS_NAMES == preset["class_names"] and len(CLASS_NAMES) == preset["num_classes"] == 22
    assert len(SEGMENTATION_TYPES) == 23 and LABEL_MAP[0] == -1
    assert LABEL_MAP[1:].tolist() == list(range(22))  # Waymo TYPE_CAR (1) -> car (0) ... TYPE_SIDEWALK (22)


def test_points_labels_and_intensity_are_reconstructed(waymo_src, tmp_path):
    src, expected = waymo_src
    report = import_waymo(src, tmp_path / "out")
    scene = Scene.load(tmp_path / "out" / f"{CONTEXT}_{T0}")
    want, want_label, want_strength = [], [], []
    for laser in (1, 2):
        for ret, ((points, pixel), intensity) in enumerate(expected[laser]):
            want.append(points)
            want_strength.append(np.tanh(intensity.ravel()[pixel]))
            if laser == 1:  # only the TOP laser is labelled; return 2 is all road (Waymo 18)
                want_label.append(LABEL_MAP[semantic_of(pixel)] if ret == 0
                                  else np.full(len(pixel), CLASS_NAMES.index("road")))
            else:
                want_label.append(np.full(len(pixel), -1))
    want, want_label, want_strength = sort_rows(np.concatenate(want), np.concatenate(want_label),
                                                np.concatenate(want_strength))
    got, got_label, got_strength = sort_rows(scene.coord.astype(np.float64), scene.attributes["segment"],
                                             scene.attributes["strength"].astype(np.float64))
    assert got.shape == want.shape and len(got) > 100
    np.testing.assert_allclose(got, want, atol=2e-3)  # float32 pixel poses at ~1 km from the world origin
    np.testing.assert_allclose(got_strength, want_strength, atol=1e-6)
    assert np.array_equal(got_label, want_label)
    assert (want_label == -1).any() and len(np.unique(want_label)) > 10
    # The FRONT laser's points lie on the wall; the TOP laser's were moved by the sweep motion.
    assert np.isclose(got[:, 0], WALL_X, atol=1e-3).sum() >= sum(len(p) for (p, _), _ in expected[2][:1])
    assert scene.meta["segment"] == "segment" and scene.meta["class_names"] == CLASS_NAMES
    assert scene.meta["waymo"] == {"context": CONTEXT, "timestamp_micros": T0, "labelled": True}
    assert report.scenes == 1 and report.skipped_unlabelled == 1 and report.splits == {"train": 1}
    assert report.points == scene.num_points and report.labelled_points == int((scene.attributes["segment"] >= 0).sum())
    assert (tmp_path / "out" / "splits" / "train.txt").read_text() == f"{CONTEXT}_{T0}\n"
    assert set(scene.attributes) == {"strength", "segment"}


def test_without_pixel_poses_the_top_points_would_be_off(waymo_src):
    """Guards the fixture: the sweep motion moves the TOP points by up to 0.6 m, so the test above
    can tell motion compensation from none."""
    _, expected = waymo_src
    (points, pixel), _ = expected[1][0]
    static, _ = expected_points(1, wall_ranges(1, WALL_X), motion=False)
    assert np.abs(points - static).max() > 0.5


def source_jpeg(src: Path, camera: int, t: int = T0) -> bytes:
    table = pq.read_table(src / "training" / "camera_image" / f"{CONTEXT}.parquet")
    keys = zip(table.column("key.camera_name").to_pylist(), table.column("key.frame_timestamp_micros").to_pylist())
    return table.column("[CameraImageComponent].image")[[k == (camera, t) for k in keys].index(True)].as_py()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("crop", [None, 0, 100])  # None: the default, the reference's 394 rows
def test_camera_projects_a_known_point_to_its_pixel(waymo_src, tmp_path, crop):
    src, _ = waymo_src
    rows = DESIGN_CROP if crop is None else crop
    report = import_waymo(src, tmp_path / "out", **({} if crop is None else {"crop_front_top": crop}))
    scene = Scene.load(tmp_path / "out" / f"{CONTEXT}_{T0}")
    # SIDE_LEFT: no image
    assert [v.name for v in scene.views] == ["FRONT", "SIDE_RIGHT"] and report.missing_cameras == 1
    view = scene.views[0]
    assert (view.width, view.height) == (CAMERA["width"], CAMERA["height"] - rows)
    image = view.read_image()
    assert image.shape == (CAMERA["height"] - rows, CAMERA["width"], 3)
    want_u, want_v, want_z = front_pixel(KNOWN_POINT)  # in the stored, uncropped image
    uv, z = project_points(torch.from_numpy(KNOWN_POINT[None]), torch.from_numpy(view.world_to_cam)[None],
                           torch.from_numpy(view.intrinsics)[None])
    np.testing.assert_allclose(uv[0, 0].numpy(), [want_u, want_v - rows], atol=1e-6)
    assert float(z[0, 0]) == pytest.approx(want_z)
    # The image content at the point's (distorted) pixel is the white square the fixture painted there;
    # near the image centre the lens moves it by under a pixel, so the pinhole pixel lies in it too.
    lens_u, lens_v, _ = front_pixel(KNOWN_POINT, distorted=True)
    for u, v in np.round([[lens_u, lens_v - rows], uv[0, 0].numpy()]).astype(int):
        assert (image[v - 5:v + 6, u - 5:u + 6] > 235).all()
    np.testing.assert_allclose(view.intrinsics, [[CAMERA["f"], 0, CAMERA["cx"]], [0, CAMERA["f"], CAMERA["cy"] - rows],
                                                 [0, 0, 1]])


def test_front_crop_keeps_the_content_of_each_row_and_leaves_side_cameras_alone(waymo_src, tmp_path):
    src, _ = waymo_src
    report = import_waymo(src, tmp_path / "out")
    scene = Scene.load(tmp_path / "out" / f"{CONTEXT}_{T0}")
    front, side = scene.views
    # Cropped FRONT = the stored image without its top 394 rows (re-encoded as JPEG 95: a few levels).
    original = decoded(source_jpeg(src, 1)).astype(np.int16)
    diff = np.abs(front.read_image().astype(np.int16) - original[DESIGN_CROP:])
    assert diff.mean() < 1.0 and diff.max() <= 16
    # ... so that the five cameras share the side cameras' size (docs/design.md#views-per-dataset: 1920x886).
    assert (front.width, front.height) == (side.width, side.height) == (SIDE["width"], SIDE["height"])
    assert front.image_path.suffix == ".jpg" and front.image_path.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    # SIDE_RIGHT: the stored JPEG byte for byte, its calibration unchanged.
    assert side.image_path.read_bytes() == source_jpeg(src, 5)
    np.testing.assert_array_equal(side.intrinsics, [[SIDE["f"], 0, SIDE["cx"]], [0, SIDE["f"], SIDE["cy"]], [0, 0, 1]])
    # The pose of a cropped camera is the uncropped one's: only the principal point moved.
    whole = import_waymo(src, tmp_path / "whole", crop_front_top=0)
    assert whole.image_crop_top == {} and whole.cropped_views == 0
    uncropped = Scene.load(tmp_path / "whole" / f"{CONTEXT}_{T0}").views[0]
    np.testing.assert_array_equal(front.cam_to_world, uncropped.cam_to_world)
    # The crop is recorded in meta.json and the report.
    assert scene.meta["image_crop_top"] == {"FRONT": DESIGN_CROP}
    assert report.image_crop_top == {"FRONT": DESIGN_CROP} and report.cropped_views == 1


def test_no_crop_keeps_every_image_as_stored(waymo_src, tmp_path):
    src, _ = waymo_src
    import_waymo(src, tmp_path / "out", crop_front_top=0)
    scene = Scene.load(tmp_path / "out" / f"{CONTEXT}_{T0}")
    assert "image_crop_top" not in scene.meta
    for view, camera in zip(scene.views, (1, 5)):
        assert view.image_path.read_bytes() == source_jpeg(src, camera)
        assert (view.width, view.height) == (CAMERAS[camera][0]["width"], CAMERAS[camera][0]["height"])


def test_crop_option_and_its_errors(waymo_src, tmp_path, capsys):
    src, _ = waymo_src
    from ditr.commands.import_ import waymo as command

    assert command.DEFAULT_CROP_FRONT_TOP == DEFAULT_CROP_FRONT_TOP == DESIGN_CROP
    assert main(["import", "waymo", str(src), str(tmp_path / "out"), "--crop-front-top", "1000"]) == 0
    assert json.loads(capsys.readouterr().out)["image_crop_top"] == {"FRONT": 1000}
    assert Scene.load(tmp_path / "out" / f"{CONTEXT}_{T0}").views[0].height == 280
    for rows in (1280, 5000):  # every row of the 1280-row FRONT camera, or more
        with pytest.raises(DitrError, match=f"--crop-front-top {rows} removes every row of camera FRONT.*1280 rows"):
            import_waymo(src, tmp_path / "bad", crop_front_top=rows)
    assert not list((tmp_path / "bad").glob(f"{CONTEXT}_*"))  # refused before any frame is written
    assert main(["import", "waymo", str(src), str(tmp_path / "bad"), "--crop-front-top", "1280"]) == 2
    assert "--crop-front-top 1280" in capsys.readouterr().err
    with pytest.raises(DitrError, match="--crop-front-top must be 0"):
        import_waymo(src, tmp_path / "bad", crop_front_top=-1)


def test_a_front_image_that_cannot_be_decoded_for_the_crop_is_a_missing_camera(waymo_src, tmp_path):
    src, _ = waymo_src
    path = src / "training" / "camera_image" / f"{CONTEXT}.parquet"
    table = pq.read_table(path)
    images = table.column("[CameraImageComponent].image").to_pylist()
    images = [data[: len(data) // 2] if camera == 1 else data  # header intact, scan data truncated
              for data, camera in zip(images, table.column("key.camera_name").to_pylist())]
    index = table.schema.get_field_index("[CameraImageComponent].image")
    pq.write_table(table.set_column(index, table.schema.field(index), pa.array(images, pa.binary())), path)
    report = import_waymo(src, tmp_path / "out")
    assert report.missing_cameras == 2 and report.cropped_views == 0 and report.image_crop_top == {}
    scene = Scene.load(tmp_path / "out" / f"{CONTEXT}_{T0}")
    assert [v.name for v in scene.views] == ["SIDE_RIGHT"] and "image_crop_top" not in scene.meta


def test_unlabelled_frames_on_request(waymo_src, tmp_path):
    src, _ = waymo_src
    report = import_waymo(src, tmp_path / "out", labelled_only=False)
    assert report.scenes == 2 and report.skipped_unlabelled == 0
    unlabelled = Scene.load(tmp_path / "out" / f"{CONTEXT}_{T1}")
    assert "segment" not in unlabelled.attributes and unlabelled.meta["waymo"]["labelled"] is False
    assert "segment" in Scene.load(tmp_path / "out" / f"{CONTEXT}_{T0}").attributes
    assert (tmp_path / "out" / "splits" / "train.txt").read_text().split() == [f"{CONTEXT}_{T0}", f"{CONTEXT}_{T1}"]


def test_frame_step_max_frames_and_splits(tmp_path):
    src = tmp_path / "waymo_v2"
    write_segment(src / "training")
    write_segment(src / "validation")
    report = import_waymo(src, tmp_path / "out", labelled_only=False, max_frames=1)
    assert report.splits == {"train": 1, "val": 1} and report.segments == 2
    report = import_waymo(src / "validation", tmp_path / "out2", labelled_only=False, frame_step=2)
    assert report.splits == {"val": 1} and not (tmp_path / "out2" / "splits" / "train.txt").exists()
    # A later import of more frames adds up with the scenes already listed.
    report = import_waymo(src / "validation", tmp_path / "out2", labelled_only=False, max_frames=2)
    assert report.splits == {"val": 2}
    assert (tmp_path / "out2" / "splits" / "val.txt").read_text().split() == [f"{CONTEXT}_{T0}", f"{CONTEXT}_{T1}"]


def test_cli_prints_a_report(waymo_src, tmp_path, capsys):
    src, _ = waymo_src
    assert main(["import", "waymo", str(src), str(tmp_path / "out"), "--no-labelled-only", "--max-frames", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "waymo" and report["scenes"] == 1 and report["splits"] == {"train": 1}
    assert (report["stored_pixel_views"], report["pinhole_views"], report["pinhole_frames"]) == (2, 0, {})


def test_missing_component_directory_is_a_clear_error(waymo_src, tmp_path):
    src, _ = waymo_src
    for p in (src / "training" / "camera_calibration").iterdir():
        p.unlink()
    (src / "training" / "camera_calibration").rmdir()
    with pytest.raises(DitrError, match="camera_calibration/"):
        import_waymo(src, tmp_path / "out")
    (src / "training" / "lidar_segmentation" / f"{CONTEXT}.parquet").rename(tmp_path / "labels.parquet")
    (src / "training" / "lidar_segmentation").rmdir()
    with pytest.raises(DitrError, match="lidar_segmentation/.*--no-labelled-only"):
        import_waymo(src, tmp_path / "out")


@pytest.mark.parametrize("component, column", [
    ("lidar", "[LiDARComponent].range_image_return1.shape"),
    ("camera_image", "[CameraImageComponent].pose.transform"),
    ("lidar_calibration", "[LiDARCalibrationComponent].extrinsic.transform"),
])
def test_missing_column_names_the_file_and_column(tmp_path, component, column):
    src = tmp_path / "training"
    write_segment(src, omit={component: column})
    with pytest.raises(SceneError) as info:
        import_waymo(src, tmp_path / "out")
    assert info.value.file == src / component / f"{CONTEXT}.parquet" and info.value.field == column


def test_bad_range_image_shape_is_an_error(waymo_src, tmp_path):
    src, _ = waymo_src
    path = src / "training" / "lidar" / f"{CONTEXT}.parquet"
    table = pq.read_table(path)
    shapes = table.column("[LiDARComponent].range_image_return1.shape").to_pylist()
    shapes[0] = [9, 32, 4]
    index = table.schema.get_field_index("[LiDARComponent].range_image_return1.shape")
    table = table.set_column(index, table.schema.field(index), pa.array(shapes, pa.list_(pa.int32(), 3)))
    pq.write_table(table, path)
    with pytest.raises(SceneError, match="do not fill the declared shape"):
        import_waymo(src, tmp_path / "out")


@pytest.mark.parametrize("component, reason",
                         [("vehicle_pose", "no vehicle pose"), ("lidar_pose", "no TOP pixel pose")])
def test_a_missing_pose_row_skips_and_counts_the_frame(waymo_src, tmp_path, component, reason):
    src, _ = waymo_src
    path = src / "training" / component / f"{CONTEXT}.parquet"
    table = pq.read_table(path)
    pq.write_table(table.filter(pc.equal(table.column("key.frame_timestamp_micros"), T1)), path)
    report = import_waymo(src, tmp_path / "out", labelled_only=False)
    assert report.scenes == 1 and report.skipped == {reason: 1}
    assert (tmp_path / "out" / "splits" / "train.txt").read_text() == f"{CONTEXT}_{T1}\n"


def test_column_names_are_matched_tolerantly(waymo_src, tmp_path):
    """Another case, or another spelling of the component prefix, still finds the field."""
    src, _ = waymo_src
    for component, rename in (("lidar", str.lower),
                              ("camera_calibration",
                               lambda n: n.replace("[CameraCalibrationComponent]", "[CameraCalib]"))):
        path = src / "training" / component / f"{CONTEXT}.parquet"
        table = pq.read_table(path)
        pq.write_table(table.rename_columns([rename(n) for n in table.column_names]), path)
    assert import_waymo(src, tmp_path / "out").scenes == 1


# ------------------------------------------------------------------- Waymo's own camera projections
def frame_projection(expected: dict) -> tuple[np.ndarray, np.ndarray]:
    """The frame's points and their (M, 6) lidar_camera_projection channels in the importer's order
    (the lidar file's laser rows, TOP then FRONT; return 1 then return 2; pixels row by row)."""
    points = np.concatenate([p for laser in (1, 2) for (p, _), _ in expected[laser]])
    return points, np.concatenate([c for laser in (1, 2) for c in expected["projection"][laser]])


def wanted_pixels(projection: np.ndarray, camera: int, crop: int, height: int, first_only: bool = False) -> np.ndarray:
    """Per point the stored (x, y) of ``camera`` (from the first or, unless ``first_only``, the second
    projection), y moved up by ``crop``; NaN where the point has none or it lies in the removed rows."""
    want = np.full((len(projection), 2), np.nan, np.float32)
    for slot in (0,) if first_only else (0, 1):
        hit = projection[:, 3 * slot] == camera
        want[hit] = projection[hit, 3 * slot + 1:3 * slot + 3]
    want[:, 1] -= np.float32(crop)
    want[(want[:, 1] < 0) | (want[:, 1] >= height)] = np.nan
    return want


@pytest.mark.parametrize("crop", [None, 0, 1000])  # None: the default 394 rows; 1000 removes some points' rows
def test_correspondences_are_waymos_stored_pixels_not_the_pinhole_ones(waymo_src, tmp_path, crop):
    src, expected = waymo_src
    rows = DESIGN_CROP if crop is None else crop
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pinhole fallback warning: every view has stored pixels
        report = import_waymo(src, tmp_path / "out", **({} if crop is None else {"crop_front_top": crop}))
    assert (report.stored_pixel_views, report.pinhole_views, report.pinhole_frames) == (2, 0, {})
    scene = Scene.load(tmp_path / "out" / f"{CONTEXT}_{T0}")
    points, projection = frame_projection(expected)
    np.testing.assert_allclose(scene.coord, points, atol=2e-3)  # same order: each pixel row is its point's
    config = ProjectionConfig(occlusion="none")
    corr = project_scene(scene, config)
    pinhole = project_scene(dataclasses.replace(scene, views=[dataclasses.replace(v, pixels=None)
                                                              for v in scene.views]), config)
    for i, (view, camera) in enumerate(zip(scene.views, (1, 5))):
        want = wanted_pixels(projection, camera, rows if view.name == "FRONT" else 0, view.height, first_only=True)
        has = ~np.isnan(want[:, 0])
        np.testing.assert_array_equal(view.pixels, want)
        assert corr.in_frame[i].numpy().tolist() == has.tolist() and has.sum() >= 15
        np.testing.assert_array_equal(corr.uv[i].numpy()[has], want[has])
        # The pinhole model would put the points elsewhere (the lens distortion moves them by up to
        # 15 px in SIDE_RIGHT, 69 px in FRONT); the camera depth is the pose's either way.
        assert np.abs(pinhole.uv[i].numpy()[has] - want[has]).max() > 10
        assert torch.equal(corr.depth[i], pinhole.depth[i])
    if rows == 1000:  # the crop removed the FRONT rows where some points are
        assert 0 < (~np.isnan(scene.views[0].pixels[:, 0])).sum() < (projection[:, 0] == 1).sum()


def test_a_point_two_cameras_see_keeps_its_first_pixel_or_on_request_both(waymo_src, tmp_path):
    src, expected = waymo_src
    _, projection = frame_projection(expected)
    shared = (projection[:, 0] == 1) & (projection[:, 3] == 5)  # FRONT first, SIDE_RIGHT second
    assert shared.sum() >= 5  # the fixture's guard: the turned SIDE_RIGHT shares points with FRONT
    first = Scene.load(import_waymo(src, tmp_path / "first") and tmp_path / "first" / f"{CONTEXT}_{T0}")
    both = Scene.load(import_waymo(src, tmp_path / "both", projections="both")
                      and tmp_path / "both" / f"{CONTEXT}_{T0}")
    np.testing.assert_array_equal(first.views[0].pixels, both.views[0].pixels)  # FRONT: always the first
    side_both, side_first = both.views[1].pixels, first.views[1].pixels
    assert not np.isnan(side_both[shared]).any() and np.isnan(side_first[shared]).all()
    np.testing.assert_array_equal(side_first, wanted_pixels(projection, 5, 0, SIDE["height"], first_only=True))
    seen = project_scene(both, ProjectionConfig(occlusion="none")).in_frame
    assert seen.all(dim=0).numpy()[shared].all()  # both views see the shared points
    assert project_scene(first, ProjectionConfig(occlusion="none")).in_frame.sum(dim=0).max() == 1
    with pytest.raises(DitrError, match="--projections must be one of first, both, none"):
        import_waymo(src, tmp_path / "bad", projections="second")


def test_projections_none_imports_pinhole_views_without_a_warning(waymo_src, tmp_path):
    src, _ = waymo_src
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = import_waymo(src, tmp_path / "out", projections="none")
    assert (report.stored_pixel_views, report.pinhole_views, report.pinhole_frames) == (0, 2, {})
    scene_dir = tmp_path / "out" / f"{CONTEXT}_{T0}"
    assert all(v.pixels is None for v in Scene.load(scene_dir).views) and not (scene_dir / "pixels").exists()


def test_stored_pixels_of_one_camera_from_the_six_channels():
    projection = np.array([[1, 10.5, 20, 5, 30, 40], [5, 1, 2, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 10, 5, 0, 0, 0],
                           [4, 3, 3, 5, 100, 7]], np.float32)
    nan = np.nan
    np.testing.assert_array_equal(stored_pixels(projection, 5, 100, 90),
                                  [[30, 40], [1, 2], [nan, nan], [nan, nan], [nan, nan]])  # x = 100: outside
    np.testing.assert_array_equal(stored_pixels(projection, 5, 101, 90, first_only=True),
                                  [[nan, nan], [1, 2], [nan, nan], [nan, nan], [nan, nan]])
    np.testing.assert_array_equal(stored_pixels(projection, 1, 100, 80, crop_top=10),
                                  [[10.5, 10], [nan, nan], [nan, nan], [nan, nan], [nan, nan]])  # y 5 - 10 < 0
    assert stored_pixels(projection, 1, 100, 80).dtype == np.float32


@pytest.mark.parametrize("missing, reason", [
    ("file", "no lidar_camera_projection file"),
    ("row", "no lidar_camera_projection row for laser FRONT"),
    ("return", "no lidar_camera_projection range_image_return2 for laser TOP"),
])
def test_without_stored_projections_the_views_fall_back_to_pinholes_with_a_warning(waymo_src, tmp_path, missing,
                                                                                    reason):
    src, _ = waymo_src
    path = src / "training" / "lidar_camera_projection" / f"{CONTEXT}.parquet"
    if missing == "file":
        path.unlink()
    else:
        table = pq.read_table(path)
        t0 = np.array(table.column("key.frame_timestamp_micros").to_pylist()) == T0
        laser = np.array(table.column("key.laser_name").to_pylist())
        if missing == "row":
            table = table.filter(pa.array(~(t0 & (laser == 2))))
        else:
            name = "[LiDARCameraProjectionComponent].range_image_return2.values"
            values = [None if drop else v for v, drop in zip(table.column(name).to_pylist(), t0 & (laser == 1))]
            index = table.schema.get_field_index(name)
            table = table.set_column(index, table.schema.field(index), pa.array(values, pa.list_(pa.float32())))
        pq.write_table(table, path)
    with pytest.warns(UserWarning, match=f"1 of 1 frames have no stored camera projections \\({reason}: 1\\);"
                                         ".*pinhole model"):
        report = import_waymo(src, tmp_path / "out")
    assert (report.stored_pixel_views, report.pinhole_views, report.pinhole_frames) == (0, 2, {reason: 1})
    scene_dir = tmp_path / "out" / f"{CONTEXT}_{T0}"
    assert all("pixels" not in v for v in json.loads((scene_dir / "views.json").read_text())["views"])
    scene = Scene.load(scene_dir)
    assert all(v.pixels is None for v in scene.views) and not (scene_dir / "pixels").exists()
    # The pinhole model is the view's intrinsics and pose: a known point lands on its pinhole pixel.
    u, v, _ = front_pixel(KNOWN_POINT)
    uv, _ = project_points(torch.from_numpy(KNOWN_POINT[None]), torch.from_numpy(scene.views[0].world_to_cam)[None],
                           torch.from_numpy(scene.views[0].intrinsics)[None])
    np.testing.assert_allclose(uv[0, 0].numpy(), [u, v - DESIGN_CROP], atol=1e-6)


@pytest.mark.parametrize("edit, problem", [
    ("camera", "camera name -1 is not a Waymo CameraName"),
    ("fraction", "camera name 0.5 is not a Waymo CameraName"),
    ("shape", "(7, 32) pixels, the range image"),
])
def test_bad_stored_projections_name_the_file_and_column(waymo_src, tmp_path, edit, problem):
    src, _ = waymo_src
    path = src / "training" / "lidar_camera_projection" / f"{CONTEXT}.parquet"
    table = pq.read_table(path)
    name = "[LiDARCameraProjectionComponent].range_image_return1"
    values, shapes = table.column(name + ".values").to_pylist(), table.column(name + ".shape").to_pylist()
    image = np.array(values[0], np.float32).reshape(shapes[0])  # T0, TOP
    if edit == "shape":
        image = image[1:]
    else:
        image[..., 0] = -1 if edit == "camera" else 0.5
    values[0], shapes[0] = image.ravel().tolist(), list(image.shape)
    for column, data, kind in ((".values", values, pa.list_(pa.float32())),
                               (".shape", shapes, pa.list_(pa.int32(), 3))):
        index = table.schema.get_field_index(name + column)
        table = table.set_column(index, table.schema.field(index), pa.array(data, kind))
    pq.write_table(table, path)
    with pytest.raises(SceneError) as info:
        import_waymo(src, tmp_path / "out")
    assert info.value.file == path and info.value.field == name + ".values"
    assert problem in info.value.problem


def test_an_imported_scene_with_damaged_pixels_names_the_file_and_field(waymo_src, tmp_path):
    src, _ = waymo_src
    import_waymo(src, tmp_path / "out")
    scene_dir = tmp_path / "out" / f"{CONTEXT}_{T0}"
    pixels = np.load(scene_dir / "pixels" / "FRONT.npy")
    pixels[np.flatnonzero(~np.isnan(pixels[:, 0]))[0], 1] = 886.0  # one row below the cropped image
    np.save(scene_dir / "pixels" / "FRONT.npy", pixels)
    with pytest.raises(SceneError) as info:
        Scene.load(scene_dir)
    assert info.value.file == scene_dir / "pixels" / "FRONT.npy" and info.value.field == "views[0] (FRONT).pixels"
    assert "outside the 1920x886 image" in info.value.problem


def test_cli_projection_choices_match_the_importer():
    from ditr.commands.import_ import waymo as command
    from ditr.io.waymo import PROJECTIONS

    parser = __import__("argparse").ArgumentParser()
    command.add_arguments(parser)
    assert next(a for a in parser._actions if a.dest == "projections").choices == PROJECTIONS


def test_stored_pixels_reach_the_training_sample_through_voxelisation(waymo_src, tmp_path):
    """A training sample's per-view pixels (pixel_uv, computed on the raw points, carried through the
    3D transforms) are the stored ones of the points it keeps, mirrored in the flipped views."""
    from ditr.data import SceneDataset

    src, _ = waymo_src
    import_waymo(src, tmp_path / "out")
    path = tmp_path / "out" / f"{CONTEXT}_{T0}"
    config = {"dataset": {"input_features": ["coord", "strength"], "segment": "segment"}, "model": {"name": "ditr"},
              "images": {"views_per_sample": 2}, "projection": {"occlusion": "none"},
              "vfm": {"model": "dinov2-tiny-random-reg", "cache": str(tmp_path / "features")},
              "transforms": {"train": [{"type": "CenterShift"}, {"type": "RandomRotate", "p": 1.0},
                                       {"type": "ImageFlip", "p": 0.5}, {"type": "GridSample", "grid_size": 2.0}]}}

    class PatchGrids:  # what correspondences ask of the feature source (the real one loads a VFM)
        online = False
        cache = None  # no feature cache, so no correspondence cache either

        @staticmethod
        def patch_grid(view):
            return 22, 48

    dataset = SceneDataset([path], None, config, "train", features=PatchGrids())  # type: ignore[arg-type]
    scene = Scene.load(path)
    stored = {v.name: v.pixels for v in scene.views}
    rng = np.random.default_rng(0)
    for _ in range(2):
        (sample,) = dataset.voxelise(dataset.raw_sample(scene, rng)[0], rng)
        assert 0 < len(sample["index"]) < scene.num_points  # voxelised: some points dropped
        for k, name in enumerate(sample["view_names"]):
            want = stored[name][sample["index"]].copy()
            if sample["view_flipped"][k]:
                want[:, 0] = sample["image_sizes"][k, 1] - want[:, 0]
            has = ~np.isnan(want[:, 0])
            assert sample["visible"][k].tolist() == has.tolist() and has.any()
            np.testing.assert_array_equal(sample["pixel_uv"][k][has], want[has])
