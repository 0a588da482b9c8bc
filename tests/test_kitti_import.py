"""SemanticKITTI and KITTI object importers: real samples (calibration, projection) and generated
native-layout fixtures (label map, instances, splits, bad input)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ditr.cli import main
from ditr.configs import load_preset
from ditr.errors import DitrError, SceneError
from ditr.io.kitti import (SEMANTICKITTI_CLASSES, SEMANTICKITTI_LEARNING_MAP, import_kitti_object,
                           import_semantickitti, odometry_camera, read_calib, rectified_camera)
from ditr.projection import ProjectionConfig, project_points, project_scene
from ditr.scene import Scene
from ditr.viz.overlay import render_overlays
from conftest import shared_path

pytestmark = pytest.mark.usefixtures("single_thread")

# Sequence 00's calibration (P0, P2 and Tr as in SemanticKITTI's calib.txt); P2 has a real translation.
P0 = "7.188560e+02 0 6.071928e+02 0 0 7.188560e+02 1.852157e+02 0 0 0 1 0"
P2 = "7.188560e+02 0 6.071928e+02 4.538225e+01 0 7.188560e+02 1.852157e+02 -1.130887e-01 0 0 1 3.779761e-03"
TR = ("4.276802e-04 -9.999672e-01 -8.084492e-03 -1.198460e-02 -7.210627e-03 8.081198e-03 -9.999413e-01 "
      "-5.403985e-02 9.999739e-01 4.859486e-04 -7.206934e-03 -2.921969e-01")


def _project(points: np.ndarray, k: np.ndarray, cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uv and depth through ditr.projection, in float64 so that the comparison tests the calibration."""
    uv, z = project_points(torch.from_numpy(points.astype(np.float64)),
                           torch.from_numpy(np.linalg.inv(cam_to_world))[None], torch.from_numpy(k)[None])
    return uv[0].numpy(), z[0].numpy()


def _direct(points: np.ndarray, projection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = projection @ np.c_[points, np.ones(len(points))].T
    return (h[:2] / h[2]).T, h[2]


def _calib_matrices(path) -> dict[str, np.ndarray]:
    calib = read_calib(path)
    out = {k: v.reshape(3, 4) for k, v in calib.items() if v.size == 12}
    out.update({k: v.reshape(3, 3) for k, v in calib.items() if v.size == 9})
    return out


def _h(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: m.shape[0], : m.shape[1]] = m
    return out


# ------------------------------------------------------------------------------------ real samples
def test_semantickitti_sample_calibration_sees_the_documented_frustum():
    seq = shared_path("data", "semantickitti", "sequences", "00")
    k, cam_to_world = odometry_camera(seq / "calib.txt")
    points = np.fromfile(seq / "velodyne" / "000000.bin", np.float32).reshape(-1, 4)[:, :3]
    uv, z = _project(points, k, cam_to_world)
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 1241) & (uv[:, 1] >= 0) & (uv[:, 1] < 376)
    assert int(inside.sum()) == 19369  # the sample README's count for the 1241x376 image_2 frustum
    m = _calib_matrices(seq / "calib.txt")
    uv_direct, z_direct = _direct(points, m["P2"] @ _h(m["Tr"]))
    np.testing.assert_allclose(uv[inside], uv_direct[inside], atol=1e-3, rtol=0)
    np.testing.assert_allclose(z, z_direct, atol=1e-6, rtol=0)
    # the P2 translation (camera 2 is ~6 cm left of camera 0) is kept, not dropped:
    cam0_to_velo = np.linalg.inv(_h(m["Tr"]))
    assert np.linalg.norm(cam_to_world[:3, 3] - cam0_to_velo[:3, 3]) == pytest.approx(0.06, abs=0.005)


def test_semantickitti_sample_imports_with_the_learning_map(tmp_path):
    src = shared_path("data", "semantickitti")
    report = import_semantickitti(src, tmp_path / "out")
    assert (report.scenes, report.views, report.frames_without_image) == (1, 0, 1)
    assert report.splits == {"train": 1, "val": 0, "test": 0} and report.unknown_label_points == 0
    scene = Scene.load(tmp_path / "out" / "00_000000")
    assert scene.num_points == 124668 and scene.views == []
    assert scene.class_names == SEMANTICKITTI_CLASSES and scene.meta["segment"] == "segment"
    seg = scene.segment()
    raw = np.fromfile(src / "sequences" / "00" / "labels" / "000000.label", np.uint32)
    # raw counts of this frame: car 10: 4234; road 40 + lane-marking 60: 34228 + 1053;
    # moving-motorcyclist 255 -> motorcyclist: 88; ignored 0, 1, 52, 99: 2184 + 4 + 1471 + 1227
    counts = np.bincount(seg[seg >= 0], minlength=19)
    assert counts[SEMANTICKITTI_CLASSES.index("car")] == 4234
    assert counts[SEMANTICKITTI_CLASSES.index("road")] == 34228 + 1053
    assert counts[SEMANTICKITTI_CLASSES.index("motorcyclist")] == 88
    assert int((seg == -1).sum()) == 2184 + 4 + 1471 + 1227
    np.testing.assert_array_equal(scene.attributes["instance"],
                                  np.where(raw >> 16 > 0, (raw >> 16).astype(np.int64), -1))
    vel = np.fromfile(src / "sequences" / "00" / "velodyne" / "000000.bin", np.float32).reshape(-1, 4)
    np.testing.assert_array_equal(scene.coord, vel[:, :3])
    np.testing.assert_array_equal(scene.attributes["strength"], vel[:, 3])


def test_kitti_object_sample_projects_into_its_image(tmp_path, capsys):
    src = shared_path("data", "kitti_object")
    assert main(["import", "kitti", str(src), str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["scenes"], report["views"], report["frames_without_image"]) == (1, 1, 0)
    scene = Scene.load(tmp_path / "out" / "000008")
    (view,) = scene.views
    assert (view.width, view.height) == (1242, 375) and "segment" not in scene.attributes
    corr = project_scene(scene, ProjectionConfig(occlusion="none"))
    # the scan is already cropped to the camera's field of view: measured all 17,238 points in the image
    assert corr.in_frame[0].float().mean() >= 0.999
    m = _calib_matrices(src / "training" / "calib" / "000008.txt")
    projection = m["P2"] @ _h(m["R0_rect"]) @ _h(m["Tr_velo_to_cam"])
    uv_direct, z_direct = _direct(scene.coord.astype(np.float64), projection)
    uv, z = _project(scene.coord, view.intrinsics, view.cam_to_world)
    front = z_direct > 0
    np.testing.assert_allclose(uv[front], uv_direct[front], atol=1e-3, rtol=0)
    np.testing.assert_allclose(z, z_direct, atol=1e-6, rtol=0)
    written = render_overlays(scene, corr, tmp_path / "overlays")
    assert [p.name for p in written] == ["image_2.png"] and written[0].stat().st_size > 10_000


def test_kitti_object_missing_calibration_key_is_named(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(shared_path("data", "kitti_object"), src)
    calib = src / "training" / "calib" / "000008.txt"
    calib.chmod(0o644)
    calib.write_text("\n".join(line for line in calib.read_text().splitlines() if not line.startswith("R0_rect")))
    with pytest.raises(SceneError, match=r"000008\.txt: R0_rect: missing"):
        import_kitti_object(src, tmp_path / "out")


# ----------------------------------------------------------------------- generated native layout
RAW_IDS = np.array(sorted(SEMANTICKITTI_LEARNING_MAP), dtype=np.uint32)
N = 2 * len(RAW_IDS)  # points per generated scan: every raw id twice


def _write_frame(seq_dir, frame: str, rng: np.random.Generator, *, image: bool = True, labels: bool = True) -> None:
    points = np.c_[rng.uniform(5, 30, N), rng.uniform(-5, 5, N), rng.uniform(-1, 1, N), rng.uniform(0, 1, N)]
    (seq_dir / "velodyne").mkdir(parents=True, exist_ok=True)
    points.astype(np.float32).tofile(seq_dir / "velodyne" / f"{frame}.bin")
    if labels:
        (seq_dir / "labels").mkdir(exist_ok=True)
        instance = np.arange(N, dtype=np.uint32) % 3  # 0 = no instance
        (np.tile(RAW_IDS, 2) | (instance << 16)).astype(np.uint32).tofile(seq_dir / "labels" / f"{frame}.label")
    if image:
        (seq_dir / "image_2").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((376, 1241, 3), np.uint8)).save(seq_dir / "image_2" / f"{frame}.png")


def _write_sequence(root, seq: str, frames: int = 2, *, labels: bool = True, image: bool = True) -> None:
    seq_dir = root / "sequences" / seq
    rng = np.random.default_rng(int(seq))
    for i in range(frames):
        _write_frame(seq_dir, f"{i:06d}", rng, labels=labels, image=image)
    (seq_dir / "calib.txt").write_text(f"P0: {P0}\nP1: {P0}\nP2: {P2}\nP3: {P0}\nTr: {TR}\n")


@pytest.fixture
def kitti_src(tmp_path):
    src = tmp_path / "dataset"
    _write_sequence(src, "00")
    _write_sequence(src, "08", frames=1)
    _write_sequence(src, "11", frames=1, labels=False, image=False)
    return src


def test_labels_instances_and_views_of_a_generated_sequence(kitti_src, tmp_path):
    report = import_semantickitti(kitti_src, tmp_path / "out")
    assert report.sequences == ["00", "08", "11"] and report.scenes == 4
    assert (report.views, report.frames_without_image, report.frames_without_labels) == (3, 1, 1)
    scene = Scene.load(tmp_path / "out" / "00_000001")
    expected = [-1 if SEMANTICKITTI_LEARNING_MAP[r] is None
                else SEMANTICKITTI_CLASSES.index(SEMANTICKITTI_LEARNING_MAP[r])
                for r in RAW_IDS.tolist()] * 2
    np.testing.assert_array_equal(scene.segment(), expected)
    moving = {252: "car", 253: "bicyclist", 254: "person", 255: "motorcyclist", 257: "other-vehicle", 258: "truck"}
    for raw, name in moving.items():
        assert scene.segment()[RAW_IDS.tolist().index(raw)] == SEMANTICKITTI_CLASSES.index(name)
    instance = np.arange(scene.num_points) % 3
    np.testing.assert_array_equal(scene.attributes["instance"], np.where(instance > 0, instance, -1))
    (view,) = scene.views
    assert (view.name, view.width, view.height) == ("image_2", 1241, 376)
    k, cam_to_world = odometry_camera(kitti_src / "sequences" / "00" / "calib.txt")
    np.testing.assert_array_equal(view.intrinsics, k)
    np.testing.assert_allclose(view.cam_to_world, cam_to_world)
    test_scene = Scene.load(tmp_path / "out" / "11_000000")
    assert "segment" not in test_scene.attributes and test_scene.views == [] and "segment" not in test_scene.meta


def test_splits_list_existing_scenes_and_add_up_over_runs(kitti_src, tmp_path):
    out = tmp_path / "out"
    first = import_semantickitti(kitti_src, out, sequences=["8"])
    assert first.splits == {"train": 0, "val": 1, "test": 0}
    assert not (out / "splits" / "train.txt").exists()
    second = import_semantickitti(kitti_src, out, sequences=["00", "11"], frame_step=2)
    assert second.splits == {"train": 1, "val": 1, "test": 1}
    assert (out / "splits" / "train.txt").read_text().split() == ["00_000000"]
    assert (out / "splits" / "val.txt").read_text().split() == ["08_000000"]
    assert (out / "splits" / "test.txt").read_text().split() == ["11_000000"]
    assert import_semantickitti(kitti_src, tmp_path / "capped", sequences=["00"], max_frames=1).scenes == 1


def test_the_import_writes_no_class_weights(kitti_src, tmp_path):
    # The class weights are the reference's fixed ones, in the preset; the import computes none.
    out = tmp_path / "out"
    report = import_semantickitti(kitti_src, out)
    assert report.splits["train"] == 2 and not hasattr(report, "class_weights")
    assert not (out / "class_weights.yaml").exists() and all(p.is_dir() for p in out.iterdir())


def test_preset_class_names_match_the_learning_map_order():
    assert load_preset(["semantickitti"]).dataset.class_names == SEMANTICKITTI_CLASSES
    assert set(SEMANTICKITTI_LEARNING_MAP.values()) - {None} == set(SEMANTICKITTI_CLASSES)


def test_images_may_live_in_a_separate_odometry_tree(kitti_src, tmp_path):
    shutil.move(kitti_src / "sequences" / "00" / "image_2", tmp_path / "image_2")
    odometry = tmp_path / "odometry" / "sequences" / "00"
    odometry.mkdir(parents=True)
    shutil.move(tmp_path / "image_2", odometry / "image_2")
    without = import_semantickitti(kitti_src, tmp_path / "a", sequences=["00"])
    assert (without.views, without.frames_without_image) == (0, 2)
    report = import_semantickitti(kitti_src, tmp_path / "b", sequences=["00"], images=tmp_path / "odometry")
    assert (report.views, report.frames_without_image) == (2, 0)


def test_cli_prints_the_report(kitti_src, tmp_path, capsys):
    assert main(["import", "semantickitti", str(kitti_src), str(tmp_path / "out"), "--sequences", "00"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "semantickitti" and report["scenes"] == 2 and "class_weights" not in report
    assert report["seconds_per_frame"] > 0


def test_truncated_scan_is_named(kitti_src, tmp_path):
    scan = kitti_src / "sequences" / "00" / "velodyne" / "000001.bin"
    scan.write_bytes(scan.read_bytes()[:-4])
    with pytest.raises(SceneError, match=r"000001\.bin: points: .*not a multiple of 4"):
        import_semantickitti(kitti_src, tmp_path / "out")


def test_label_count_mismatch_is_named(kitti_src, tmp_path):
    label = kitti_src / "sequences" / "00" / "labels" / "000000.label"
    label.write_bytes(label.read_bytes()[:-8])
    with pytest.raises(SceneError, match=rf"000000\.label: labels: holds {N - 2} labels for a scan of {N} points"):
        import_semantickitti(kitti_src, tmp_path / "out")


def test_missing_label_file_is_named(kitti_src, tmp_path):
    (kitti_src / "sequences" / "08" / "labels" / "000000.label").unlink()
    with pytest.raises(SceneError, match=r"000000\.label: labels: missing"):
        import_semantickitti(kitti_src, tmp_path / "out")


def test_missing_calibration_key_is_named(kitti_src, tmp_path):
    calib = kitti_src / "sequences" / "00" / "calib.txt"
    calib.write_text(f"P0: {P0}\nTr: {TR}\n")
    with pytest.raises(SceneError, match=r"00/calib\.txt: P2: missing \(the file has P0, Tr\)"):
        import_semantickitti(kitti_src, tmp_path / "out")
    calib.write_text(f"P2: {P2}\nTr: 1 2 3\n")
    with pytest.raises(SceneError, match=r"calib\.txt: Tr: holds 3 numbers, expected 3x4"):
        import_semantickitti(kitti_src, tmp_path / "out")


def test_unknown_raw_ids_are_ignored_and_counted(kitti_src, tmp_path):
    label = kitti_src / "sequences" / "11" / "labels"
    label.mkdir()
    np.full(N, 77, np.uint32).tofile(label / "000000.label")  # 77 is not a SemanticKITTI id
    report = import_semantickitti(kitti_src, tmp_path / "out", sequences=["11"])
    assert report.unknown_label_points == N
    assert (Scene.load(tmp_path / "out" / "11_000000").segment() == -1).all()


def test_bad_sources_and_options_are_clear_errors(kitti_src, tmp_path):
    with pytest.raises(DitrError, match="sequences 05 not found"):
        import_semantickitti(kitti_src, tmp_path / "out", sequences=["5"])
    with pytest.raises(DitrError, match="no sequences found"):
        import_semantickitti(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(DitrError, match="--frame-step"):
        import_semantickitti(kitti_src, tmp_path / "out", frame_step=0)
    with pytest.raises(DitrError, match="no velodyne/ directory"):
        import_kitti_object(kitti_src, tmp_path / "out")


def test_a_projection_that_is_not_rectified_is_refused(tmp_path):
    p = np.array([[700.0, 0, 600, 0], [5.0, 700, 180, 0], [0, 0, 1, 0]])
    with pytest.raises(SceneError, match=r"calib\.txt: P2: is not a rectified projection"):
        rectified_camera(p, np.eye(4), tmp_path / "calib.txt", "P2")
