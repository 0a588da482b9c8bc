"""nuScenes importer: the real v1.0-mini key frame, a generated dataset in the native table layout,
bad input, and the occlusion count that ``ditr project`` reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ditr.cli import main
from ditr.errors import DitrError, SceneError
from ditr.io.nuscenes import CAMERAS, CLASS_NAMES, LIDARSEG_TO_CLASS, MINI_SPLITS, import_nuscenes
from ditr.projection import ProjectionConfig, project_scene
from ditr.scene import Scene
from conftest import shared_path

pytestmark = pytest.mark.usefixtures("single_thread")

# Points seen per camera (depth > 1 m, inside the image), from the sample's README.
SEEN_PER_CAMERA = {"CAM_FRONT": 3067, "CAM_FRONT_RIGHT": 3079, "CAM_FRONT_LEFT": 3704, "CAM_BACK": 4826,
                   "CAM_BACK_LEFT": 4097, "CAM_BACK_RIGHT": 3379}


# ------------------------------------------------------------------------- the real key frame
@pytest.fixture(scope="module")
def real_import(tmp_path_factory):
    src = shared_path("data", "nuscenes_mini")
    out = tmp_path_factory.mktemp("nuscenes")
    report = import_nuscenes(src, out)
    (sample_dir,) = (out / "scene-0061").iterdir()
    return src, out, report, Scene.load(sample_dir)


def test_real_sample_imports(real_import):
    _, out, report, scene = real_import
    assert report.samples == 1 and report.scenes == ["scene-0061"] and report.views == 6
    assert report.missing_cameras == {} and report.missing_image_files == 0
    assert not report.lidarseg and "segment" not in scene.attributes  # the sample ships no lidarseg file
    assert scene.num_points == 34688 and scene.attributes["strength"].shape == (34688,)
    assert [v.name for v in scene.views] == list(CAMERAS)
    assert all((v.width, v.height) == (1600, 900) for v in scene.views)
    assert scene.meta["class_names"] == CLASS_NAMES and scene.meta["location"] == "singapore-onenorth"
    assert (out / "splits" / "train.txt").read_text() == "scene-0061\n"  # mini_train
    assert not (out / "splits" / "val.txt").exists()  # mini_val's scenes are not in the sample


def test_real_camera_poses_match_the_resolved_calibration(real_import):
    src, _, _, scene = real_import
    check = json.loads((src / "calibration_check.json").read_text())["cameras"]
    for view in scene.views:
        np.testing.assert_allclose(view.world_to_cam, check[view.name]["lidar2cam"], atol=1e-4, err_msg=view.name)
        np.testing.assert_allclose(view.intrinsics, check[view.name]["cam2img"], atol=1e-6, err_msg=view.name)


def test_real_points_seen_per_camera(real_import, tmp_path):
    from ditr.viz.overlay import render_overlays

    _, _, _, scene = real_import
    corr = project_scene(scene, ProjectionConfig(occlusion="none", min_depth=1.0))
    assert corr.summary()["visible_per_view"] == SEEN_PER_CAMERA
    assert corr.summary()["occluded_point_views"] == 0
    assert float(corr.seen.float().mean()) == pytest.approx(0.583, abs=5e-4)
    front_back = Scene(coord=scene.coord, views=[scene.views[0], scene.views[3]], meta=scene.meta)  # 2 of 6: time
    written = render_overlays(front_back, project_scene(front_back, ProjectionConfig(min_depth=1.0, occlusion="none")),
                              tmp_path / "png")
    assert [p.name for p in written] == ["CAM_FRONT.png", "CAM_BACK.png"]
    assert all(p.stat().st_size > 10_000 for p in written)


def test_project_reports_what_splat_occlusion_removes(real_import, tmp_path, capsys):
    _, _, _, scene = real_import
    assert main(["project", str(scene.path), "--out", str(tmp_path / "c.npz"), "--occlusion", "splat",
                 "--splat-radius-px", "4", "--min-depth", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["occlusion"] == "splat"
    assert summary["in_frame_point_views"] == sum(SEEN_PER_CAMERA.values())  # as without occlusion
    removed = summary["in_frame_point_views"] - summary["visible_point_views"]
    assert summary["occluded_point_views"] == removed == sum(summary["occluded_per_view"].values())
    assert 0 < removed < 0.1 * summary["in_frame_point_views"]  # a few per cent on this street scene


def test_project_occlusion_count_on_a_known_occluder(wall_box_dir, tmp_path, capsys):
    """The box face hides the wall points that fall on its pixels (about a 2 m x 2 m patch): the depth
    test removes exactly those, the splatted z-buffer about as many."""
    scene = Scene.load(wall_box_dir)
    corr = project_scene(scene, ProjectionConfig(occlusion="none"))
    inside = corr.in_frame[0].numpy()
    uv = corr.uv[0].numpy()[inside].astype(int)
    on_box = scene.views[0].read_label()[uv[:, 1], uv[:, 0]] == 1
    hidden = int((on_box & (scene.segment()[inside] == 0)).sum())
    assert 10_000 <= hidden <= 11_000
    for mode, tolerance in (("depth", 0), ("splat", 0.06 * hidden)):
        assert main(["project", str(wall_box_dir), "--out", str(tmp_path / "c.npz"), "--occlusion", mode]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["occluded_point_views"] == summary["in_frame_point_views"] - summary["visible_point_views"]
        assert summary["occluded_per_view"] == {"cam0": summary["occluded_point_views"]}
        assert abs(summary["occluded_point_views"] - hidden) <= tolerance, (mode, summary, hidden)


# ------------------------------------------------------------------------- generated native layout
F, W, H = 50.0, 64, 48
Q_Z90 = [np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4)]  # (w, x, y, z): LiDAR x -> ego y, like the real rig
Q_CAM_FRONT = [0.5, -0.5, 0.5, -0.5]  # OpenCV camera (z forward) -> ego (x forward, z up)
Q_CAM_BACK = [0.5, -0.5, -0.5, 0.5]  # the same turned 180 degrees about z
LIDAR_HEIGHT = 1.8
EGO_AT = {"lidar1": (100.0, 200.0), "sweep0": (99.0, 200.0), "cam1": (101.0, 200.0), "lidar2": (500.0, 0.0),
          "cam2": (500.0, 0.0)}
# A point straight ahead of CAM_FRONT at camera time, one 1 m right of it, one behind CAM_BACK (global).
GLOBAL_POINTS = np.array([[110.0, 200.0, 1.5], [110.0, 199.0, 1.5], [90.0, 200.0, 1.5]])
# Raw lidarseg indices are deliberately not in the standard order: the mapping must go via category.json.
CATEGORIES = {"flat.driveable_surface": 0, "static.other": 3, "vehicle.car": 5, "noise": 7, "vehicle.hovercraft": 9}
RAW_LABELS = np.array([5, 0, 7, 9, 3], np.uint8)
EXPECTED_LABELS = [CLASS_NAMES.index("car"), CLASS_NAMES.index("driveable_surface"), -1, -1, -1]


def _global_to_lidar(points: np.ndarray, ego_xy: tuple[float, float]) -> np.ndarray:
    """Inverse of LiDAR (z-rotation by 90 deg, 1.8 m up) -> ego (translation only) -> global."""
    d = points - [ego_xy[0], ego_xy[1], LIDAR_HEIGHT]
    return np.stack([d[:, 1], -d[:, 0], d[:, 2]], axis=1)  # R_z(-90 deg)


def _write_bin(path, xyz: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.zeros((len(xyz), 5), np.float32)
    rows[:, :3], rows[:, 3], rows[:, 4] = xyz, np.arange(len(xyz)) * 10.0, np.arange(len(xyz)) % 32
    rows.tofile(path)


def write_native(root, version: str = "v1.0-mini"):
    """Two samples (scene-0061 = mini_train, scene-0103 = mini_val) in nuScenes' own layout.

    Sample 1: LiDAR (5 points, lidarseg labels, one earlier sweep), CAM_FRONT and CAM_BACK, each at its
    own ego pose. Sample 2: LiDAR without labels, CAM_FRONT only. The other four cameras are absent.
    """
    tables = root / version
    tables.mkdir(parents=True)
    sensors = [("sen_lidar", "LIDAR_TOP", "lidar"), ("sen_front", "CAM_FRONT", "camera"),
               ("sen_back", "CAM_BACK", "camera")]
    k = [[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]]
    calibs = [("cal_lidar", "sen_lidar", [0, 0, LIDAR_HEIGHT], Q_Z90, []),
              ("cal_front", "sen_front", [1.5, 0, 1.5], Q_CAM_FRONT, k),
              ("cal_back", "sen_back", [-1.0, 0, 1.5], Q_CAM_BACK, k)]
    lidar1 = np.concatenate([_global_to_lidar(GLOBAL_POINTS, EGO_AT["lidar1"]), [[5.0, 5.0, -1.8], [0, 3, -1]]])
    _write_bin(root / "samples/LIDAR_TOP/lidar1.pcd.bin", lidar1)
    _write_bin(root / "sweeps/LIDAR_TOP/sweep0.pcd.bin", _global_to_lidar(GLOBAL_POINTS[:1], EGO_AT["sweep0"]))
    _write_bin(root / "samples/LIDAR_TOP/lidar2.pcd.bin", np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    for name, color in (("front1", (200, 0, 0)), ("back1", (0, 200, 0)), ("front2", (0, 0, 200))):
        (root / "samples" / "CAM").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H), color).save(root / "samples" / "CAM" / f"{name}.jpg")

    def sd(token, sample, channel_calib, ego, filename, key=True, prev=""):
        return {"token": token, "sample_token": sample, "ego_pose_token": f"ego_{ego}",
                "calibrated_sensor_token": channel_calib, "timestamp": 0, "fileformat": filename.split(".")[-1],
                "is_key_frame": key, "height": 0, "width": 0, "filename": filename, "prev": prev, "next": ""}

    sample_data = [
        sd("lidar1", "s1", "cal_lidar", "lidar1", "samples/LIDAR_TOP/lidar1.pcd.bin", prev="sweep0"),
        sd("sweep0", "s1", "cal_lidar", "sweep0", "sweeps/LIDAR_TOP/sweep0.pcd.bin", key=False),
        sd("front1", "s1", "cal_front", "cam1", "samples/CAM/front1.jpg"),
        sd("back1", "s1", "cal_back", "cam1", "samples/CAM/back1.jpg"),
        sd("lidar2", "s2", "cal_lidar", "lidar2", "samples/LIDAR_TOP/lidar2.pcd.bin"),
        sd("front2", "s2", "cal_front", "cam2", "samples/CAM/front2.jpg"),
    ]
    docs = {
        "sensor": [{"token": t, "channel": c, "modality": m} for t, c, m in sensors],
        "calibrated_sensor": [{"token": t, "sensor_token": s, "translation": tr, "rotation": q, "camera_intrinsic": kk}
                              for t, s, tr, q, kk in calibs],
        "ego_pose": [{"token": f"ego_{name}", "timestamp": 0, "rotation": [1, 0, 0, 0], "translation": [x, y, 0.0]}
                     for name, (x, y) in EGO_AT.items()],
        "sample_data": sample_data,
        "sample": [{"token": "s1", "timestamp": 1, "prev": "", "next": "", "scene_token": "sc1"},
                   {"token": "s2", "timestamp": 2, "prev": "", "next": "", "scene_token": "sc2"}],
        "scene": [{"token": "sc1", "name": "scene-0061", "log_token": "log1", "nbr_samples": 1},
                  {"token": "sc2", "name": "scene-0103", "log_token": "log1", "nbr_samples": 1}],
        "log": [{"token": "log1", "logfile": "n000", "vehicle": "n000", "location": "boston-seaport"}],
        "category": [{"token": f"cat{i}", "name": n, "description": "", "index": i} for n, i in CATEGORIES.items()],
        "lidarseg": [{"token": "ls1", "sample_data_token": "lidar1",
                      "filename": f"lidarseg/{version}/ls1_lidarseg.bin"}],
    }
    for name, records in docs.items():
        (tables / f"{name}.json").write_text(json.dumps(records))
    (root / "lidarseg" / version).mkdir(parents=True)
    RAW_LABELS.tofile(root / "lidarseg" / version / "ls1_lidarseg.bin")
    return root


@pytest.fixture
def native(tmp_path):
    return write_native(tmp_path / "nuscenes")


def test_mapping_table_covers_the_32_categories_and_16_classes():
    assert len(LIDARSEG_TO_CLASS) == 32
    assert sorted({c for c in LIDARSEG_TO_CLASS.values() if c}) == sorted(CLASS_NAMES)
    from ditr.configs import load_preset  # the preset's class order is the importer's

    assert load_preset(["nuscenes"]).dataset.class_names == CLASS_NAMES


def test_native_import_labels_cameras_and_splits(native, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["import", "nuscenes", str(native), str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 2 and report["version"] == "v1.0-mini"
    assert report["missing_cameras"] == {"CAM_FRONT_RIGHT": 2, "CAM_FRONT_LEFT": 2, "CAM_BACK": 1,
                                         "CAM_BACK_LEFT": 2, "CAM_BACK_RIGHT": 2}
    assert report["labelled_samples"] == 1 and report["unlabelled_samples"] == 1
    assert report["unmapped_categories"] == ["vehicle.hovercraft"]
    assert report["splits"] == {"train": 1, "val": 1} and report["scenes_in_no_split"] == []
    assert (out / "splits" / "train.txt").read_text().split() == ["scene-0061"]
    assert (out / "splits" / "val.txt").read_text().split() == ["scene-0103"]
    from ditr.data.dataset import resolve_scenes

    assert resolve_scenes(out, "val") == [out / "scene-0103" / "s2"]

    s1, s2 = Scene.load(out / "scene-0061" / "s1"), Scene.load(out / "scene-0103" / "s2")
    assert s1.segment().tolist() == EXPECTED_LABELS
    assert s1.attributes["strength"].tolist() == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert [v.name for v in s1.views] == ["CAM_FRONT", "CAM_BACK"] and [v.name for v in s2.views] == ["CAM_FRONT"]
    assert s2.segment() is None and s2.meta["location"] == "boston-seaport"


def test_native_camera_poses_compensate_ego_motion(native, tmp_path):
    """CAM_FRONT fired 1 m further along than the LiDAR: the point 8.5 m ahead of it at LiDAR time is 7.5 m."""
    import_nuscenes(native, tmp_path / "out")
    scene = Scene.load(tmp_path / "out" / "scene-0061" / "s1")
    corr = project_scene(scene, ProjectionConfig(occlusion="none"))
    front, back = 0, 1
    np.testing.assert_allclose(corr.depth[front, :2].numpy(), [7.5, 7.5], atol=1e-4)
    np.testing.assert_allclose(corr.uv[front, :2].numpy(), [[W / 2, H / 2], [W / 2 + F / 7.5, H / 2]], atol=1e-3)
    np.testing.assert_allclose(corr.depth[back, 2].item(), 10.0, atol=1e-4)  # CAM_BACK sits 1 m behind ego
    np.testing.assert_allclose(corr.uv[back, 2].numpy(), [W / 2, H / 2], atol=1e-3)
    assert corr.visible[front].tolist()[:3] == [True, True, False]


def test_native_sweeps_are_moved_into_the_key_frame(native, tmp_path):
    report = import_nuscenes(native, tmp_path / "out", sweeps=3, scenes=["scene-0061"])
    assert report.sweeps == 1  # only one earlier sweep exists
    scene = Scene.load(tmp_path / "out" / "scene-0061" / "s1")
    key = _global_to_lidar(GLOBAL_POINTS[:1], EGO_AT["lidar1"])
    assert scene.num_points == 6 and scene.meta["key_frame_points"] == 5
    np.testing.assert_allclose(scene.coord[5], key[0], atol=1e-5)  # the same global point as key point 0
    assert scene.segment().tolist() == EXPECTED_LABELS + [-1]


def test_native_selection_options(native, tmp_path):
    report = import_nuscenes(native, tmp_path / "out", scenes=["scene-0103"], max_samples=1)
    assert report.scenes == ["scene-0103"] and report.splits == {"train": 0, "val": 1}
    report = import_nuscenes(native, tmp_path / "out", scenes=["scene-0061"])  # a second run adds up
    assert report.splits == {"train": 1, "val": 1}
    with pytest.raises(DitrError, match="scene-9999"):
        import_nuscenes(native, tmp_path / "out", scenes=["scene-9999"])


def test_trainval_needs_a_split_file(tmp_path):
    src = write_native(tmp_path / "src", version="v1.0-trainval")
    with pytest.raises(DitrError, match="--split-file"):
        import_nuscenes(src, tmp_path / "out")
    split_file = tmp_path / "splits.json"
    split_file.write_text(json.dumps({"train": ["scene-0103", "scene-0001"], "val": ["scene-0002"],
                                      "mini_train": MINI_SPLITS["train"]}))
    report = import_nuscenes(src, tmp_path / "out", split_file=split_file)
    assert report.splits == {"train": 1, "val": 0} and report.scenes_in_no_split == ["scene-0061"]
    assert (tmp_path / "out" / "splits" / "train.txt").read_text() == "scene-0103\n"
    assert not (tmp_path / "out" / "splits" / "val.txt").exists()
    report = import_nuscenes(src, tmp_path / "plain", splits=False)
    assert report.splits is None and not (tmp_path / "plain" / "splits").exists()


@pytest.mark.parametrize("damage, match", [
    (lambda r: (r / "v1.0-mini" / "ego_pose.json").unlink(), "ego_pose.json: missing"),
    (lambda r: (r / "samples/LIDAR_TOP/lidar2.pcd.bin").unlink(), "lidar2.pcd.bin: points: missing"),
    (lambda r: np.zeros(7, np.float32).tofile(r / "samples/LIDAR_TOP/lidar2.pcd.bin"),
     "lidar2.pcd.bin: points: holds 7 float32 values, not a positive multiple of 5"),
    (lambda r: np.zeros(4, np.uint8).tofile(r / "lidarseg/v1.0-mini/ls1_lidarseg.bin"),
     "ls1_lidarseg.bin: labels: holds 4 labels for 5 points"),
    (lambda r: np.full(5, 2, np.uint8).tofile(r / "lidarseg/v1.0-mini/ls1_lidarseg.bin"),
     r"ls1_lidarseg.bin: labels: category indices \[2\] are not in category.json"),
    (lambda r: (r / "v1.0-mini" / "sample.json").write_text("[{"), "sample.json: is not valid JSON"),
])
def test_bad_input_names_the_file(native, tmp_path, damage, match):
    damage(native)
    with pytest.raises(SceneError, match=match):
        import_nuscenes(native, tmp_path / "out")


def test_bad_quaternion_and_dangling_token_name_the_record(native, tmp_path):
    calib_file = native / "v1.0-mini" / "calibrated_sensor.json"
    calibs = json.loads(calib_file.read_text())
    calibs[1]["rotation"] = [2.0, 0.0, 0.0, 0.0]
    calib_file.write_text(json.dumps(calibs))
    with pytest.raises(SceneError, match=r"calibrated_sensor.json: cal_front.rotation: is not a unit quaternion"):
        import_nuscenes(native, tmp_path / "out")
    calibs[1]["rotation"], calibs[1]["sensor_token"] = Q_CAM_FRONT, "nope"
    calib_file.write_text(json.dumps(calibs))
    with pytest.raises(SceneError,
                       match=r"calibrated_sensor.json: cal_front.sensor_token: token 'nope' is not in sensor.json"):
        import_nuscenes(native, tmp_path / "out")


def test_missing_image_file_is_skipped_and_counted(native, tmp_path):
    (native / "samples" / "CAM" / "back1.jpg").unlink()
    report = import_nuscenes(native, tmp_path / "out")
    assert report.missing_image_files == 1 and report.views == 2


def test_no_tables_is_a_clear_error(tmp_path):
    with pytest.raises(DitrError, match="no nuScenes tables found"):
        import_nuscenes(tmp_path, tmp_path / "out")


def test_test_version_lists_every_scene_as_test(tmp_path):
    src = write_native(tmp_path / "src", version="v1.0-test")
    report = import_nuscenes(src, tmp_path / "out")
    assert report.splits == {"test": 2}
    assert (tmp_path / "out" / "splits" / "test.txt").read_text().split() == ["scene-0061", "scene-0103"]
