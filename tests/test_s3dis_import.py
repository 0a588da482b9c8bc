"""S3DIS + 2D-3D-S importer on a generated room in the datasets' native layout.

The room (Area_1/office_1): a floor (z = 0), a wall (y = 3) and a chair face (y = 1.5) in front of
it, plus a stairs object and an object of an unknown class. One 2D-3D-S frame looks at the wall
from (1, 0.5, 1.5) with an analytically rendered depth map (1/512 m units, 65535 where missing),
so which points it sees is known exactly; a second frame of the room carries a wrong pose.
Area_5/office_2 is the same room seen by one area_5a frame and two area_5b frames; as in 2D-3D-S,
the area_5b poses are stored in the area_5b capture's own frame (the S3DIS world-to-camera matrix times C^-1,
with C the area_5b correction), while the depth maps are rendered from the true poses.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import look_at
from ditr.cli import main
from ditr.data.dataset import resolve_scenes
from ditr.errors import DitrError, SceneError
from ditr.io.s3dis import AREA_5B_CORRECTION, S3DIS_CLASSES, import_s3dis, index_frames, read_point_text, read_pose
from ditr.projection import ProjectionConfig, project_scene
from ditr.scene import Scene

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE, FOCAL = 40, 20.0
K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1]])
EYE = np.array([1.0, 0.5, 1.5])
UUID = "0123456789abcdef0123456789abcdef"
# (name, constant axis, value, (axis a, lo, hi), (axis b, lo, hi)): the room's planar pieces
PLANES = [("floor", 2, 0.0, (0, 0.0, 2.0), (1, 0.0, 3.0)),
          ("wall", 1, 3.0, (0, 0.0, 2.0), (2, 0.0, 2.5)),
          ("chair", 1, 1.5, (0, 0.8, 1.2), (2, 0.6, 1.0))]
MISSING_ROWS, MISSING_COLS = slice(13, 16), slice(25, 28)  # a hole in the depth map on the wall
DAMAGED = b"0.525 3.000 1.2\x1000 120 120 120\n"
# S3DIS coordinates -> area_5b capture coordinates (the reference's correction, row-major)
C = np.array([[0, -1, 0, 6.22617759], [1, 0, 0, 4.09703582], [0, 0, 1, 0], [0, 0, 0, 1]])


def grid(plane, spacing=0.05) -> np.ndarray:
    _, axis, value, (a, a0, a1), (b, b0, b1) = plane
    ga, gb = np.meshgrid(np.arange(a0, a1 + 1e-9, spacing), np.arange(b0, b1 + 1e-9, spacing))
    pts = np.zeros((ga.size, 3))
    pts[:, axis], pts[:, a], pts[:, b] = value, ga.ravel(), gb.ravel()
    return pts


def write_points(path, pts, rgb, extra: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{x:.3f} {y:.3f} {z:.3f} {rgb[0]} {rgb[1]} {rgb[2]}\n".encode() for x, y, z in pts]
    half = len(lines) // 2
    path.write_bytes(b"".join(lines[:half]) + extra + b"".join(lines[half:]))


def render_depth(cam_to_world) -> np.ndarray:
    """z-depth of the nearest plane piece through every pixel centre (0 where none)."""
    u, v = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5)
    rays = np.stack([(u - K[0, 2]) / FOCAL, (v - K[1, 2]) / FOCAL, np.ones_like(u)], -1) @ cam_to_world[:3, :3].T
    eye = cam_to_world[:3, 3]
    best = np.full(u.shape, np.inf)
    for _, axis, value, (a, a0, a1), (b, b0, b1) in PLANES:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (value - eye[axis]) / rays[..., axis]
        hit = eye + t[..., None] * rays
        ok = (t > 0) & (hit[..., a] >= a0) & (hit[..., a] <= a1) & (hit[..., b] >= b0) & (hit[..., b] <= b1)
        best = np.where(ok & (t < best), t, best)  # t is the z-depth: rays have camera z = 1
    return np.where(np.isfinite(best), best, 0.0)


def write_frame(images, area, room, number, cam_to_world, depth_pose=None, pose_doc=None) -> None:
    """One 2D-3D-S frame; ``depth_pose`` renders the depth from another pose (a misregistered frame).

    ``cam_to_world`` is in S3DIS coordinates; an area_5b pose is stored in area_5b's own frame.
    """
    stem = f"camera_{UUID}_{room}_frame_{number}_domain_"
    data = images / area / "data"
    for kind in ("rgb", "depth", "pose"):
        (data / kind).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((SIZE, SIZE, 3), 90, np.uint8)).save(data / "rgb" / f"{stem}rgb.png")
    depth = render_depth(cam_to_world if depth_pose is None else depth_pose)
    raw = np.where(depth > 0, np.round(depth * 512), 65535).astype(np.uint16)
    raw[MISSING_ROWS, MISSING_COLS] = 65535
    Image.fromarray(raw).save(data / "depth" / f"{stem}depth.png")
    world_to_cam = np.linalg.inv(cam_to_world)
    rt = (world_to_cam @ np.linalg.inv(C) if area == "area_5b" else world_to_cam)[:3]
    doc = pose_doc if pose_doc is not None else {
        "camera_k_matrix": K.tolist(), "camera_rt_matrix": rt.tolist(), "camera_uuid": UUID,
        "frame_num": number, "room": f"{room}_1", "field_of_view_rads": 1.57}
    (data / "pose" / f"{stem}pose.json").write_text(json.dumps(doc))


@pytest.fixture
def dataset(tmp_path):
    src = tmp_path / "Stanford3dDataset_v1.2"
    ann = src / "Area_1" / "office_1" / "Annotations"
    floor, wall, chair = (grid(p) for p in PLANES)
    write_points(ann / "floor_1.txt", floor, (100, 100, 100))
    write_points(ann / "wall_1.txt", wall, (200, 200, 200), extra=DAMAGED)
    write_points(ann / "chair_1.txt", chair, (150, 30, 30))
    write_points(ann / "stairs_1.txt", [[1.9, 0.1, 0.1], [1.9, 0.15, 0.15]], (1, 2, 3))
    write_points(ann / "mystery_1.txt", [[0.1, 0.1, 0.5]], (4, 5, 6))
    (src / "Area_1" / "office_1" / "office_1.txt").write_text("ignored: the room file duplicates the annotations\n")
    (src / "Area_1" / "Area_1_alignmentAngle.txt").write_text("## Global alignment angle per disjoint space ##\n")
    for name, pts in (("floor", floor), ("wall", wall), ("chair", chair)):
        write_points(src / "Area_5" / "office_2" / "Annotations" / f"{name}_1.txt", pts, (100, 100, 100))
    images = tmp_path / "2D-3D-S"
    pose = look_at(EYE, EYE + [0, 1, 0])
    write_frame(images, "area_1", "office_1", 0, pose)
    write_frame(images, "area_1", "office_1", 1, look_at(EYE + [0, -0.6, 0.5], EYE + [0, 0.4, 0.5]), depth_pose=pose)
    write_frame(images, "area_1", "office_9", 0, pose)  # a room the point download does not have
    write_frame(images, "area_5a", "office_2", 0, pose)
    write_frame(images, "area_5b", "office_2", 1, pose)  # the area_5a frame's pose, stored in area_5b's frame
    write_frame(images, "area_5b", "office_2", 2, POSE_2)
    return src, images


POSE_2 = look_at(EYE + [0.4, 0.2, 0], EYE + [0.4, 1.2, 0])  # looks at the wall point (1.4, 3, 1.5)


def test_read_point_text_drops_damaged_lines(tmp_path):
    good = "1 2 3 4 5 6\n" * 300
    path = tmp_path / "a.txt"
    path.write_bytes(b"0.5 1.5 2.5 10 20 30\n" + DAMAGED + b"\n1 2 3 4 5 6 7\n1 2 nan 4 5 6\n" + good.encode())
    rows, dropped = read_point_text(path)
    assert dropped.tolist() == [2, 4, 5]  # 1-based; the blank line 3 is no damage
    assert rows.shape == (301, 6) and rows[0].tolist() == [0.5, 1.5, 2.5, 10, 20, 30]
    path.write_bytes(DAMAGED * 3 + good[: len(good) // 3].encode())
    with pytest.raises(SceneError, match=r"a.txt: line 1: 3 of 103 lines"):
        read_point_text(path)


def test_room_points_labels_instances_and_normals(dataset, tmp_path):
    src, _ = dataset
    report = import_s3dis(src, tmp_path / "out", areas=["Area_1"])
    scene = Scene.load(tmp_path / "out" / "Area_1" / "office_1")
    floor, wall, chair = (len(grid(p)) for p in PLANES)
    assert scene.num_points == floor + wall + chair + 3  # the damaged line is dropped
    assert report.damaged_lines == [f"Area_1/office_1/Annotations/wall_1.txt:{wall // 2 + 1}"]
    assert report.relabelled_points == {"stairs": 2} and report.ignored_points == {"mystery": 1}
    seg, inst = scene.attributes["segment"], scene.attributes["instance"]
    counts = {S3DIS_CLASSES[c]: int((seg == c).sum()) for c in np.unique(seg[seg >= 0])}
    assert counts == {"floor": floor, "wall": wall, "chair": chair, "clutter": 2}
    assert (seg == -1).sum() == 1
    assert len(np.unique(inst)) == 5 and scene.meta["class_names"] == S3DIS_CLASSES
    assert scene.attributes["color"].dtype == np.uint8 and scene.views == []
    # Normals face into the room: the floor's up, the wall's towards -y; corners excepted.
    normal = scene.attributes["normal"]
    inner_floor = (seg == 1) & (scene.coord[:, 0] > 0.2) & (scene.coord[:, 0] < 1.8) & (scene.coord[:, 1] < 2.8)
    assert np.all(normal[inner_floor] @ [0, 0, 1] > 0.99)
    inner_wall = (seg == 2) & (scene.coord[:, 2] > 0.2) & (scene.coord[:, 0] > 0.2) & (scene.coord[:, 0] < 1.8)
    assert np.all(normal[inner_wall] @ [0, -1, 0] > 0.99)


def test_frames_project_with_the_depth_test(dataset, tmp_path):
    src, images = dataset
    report = import_s3dis(src, tmp_path / "out", images=images)
    assert report.frames == 4 and report.frames_dropped_low_agreement == 1  # the misregistered frame
    assert report.frames_unmatched == 1 and report.unmatched_rooms == ["Area_1/office_9"]
    assert report.agreement_by_area["area_1"]["frames"] == 2 and report.agreement_by_area["area_1"]["below_min"] == 1
    scene = Scene.load(tmp_path / "out" / "Area_1" / "office_1")
    (view,) = scene.views
    assert view.name == f"{UUID}_frame_0" and view.depth_scale == 512 and (view.width, view.height) == (40, 40)
    depth = view.read_depth()
    assert depth[20, 20] == 2.5 and (depth[MISSING_ROWS, MISSING_COLS] == 0).all()  # 65535 -> no depth
    corr = project_scene(scene, ProjectionConfig(occlusion="depth"))

    def at(point):
        i = int(np.argmin(np.linalg.norm(scene.coord - np.asarray(point, np.float32), axis=1)))
        assert np.allclose(scene.coord[i], point, atol=1e-6)
        return corr.uv[0, i].tolist(), bool(corr.in_frame[0, i]), bool(corr.visible[0, i])

    assert at([1.0, 3.0, 1.5]) == ([20.0, 20.0], True, True)  # straight ahead: the image centre
    assert at([1.0, 1.5, 0.8])[1:] == (True, True)  # the chair
    assert at([1.0, 3.0, 0.1])[1:] == (True, False)  # the wall behind the chair
    assert at([1.7, 3.0, 2.25])[1:] == (True, False)  # where the depth map has a hole


def test_area_5b_poses_are_corrected(dataset, tmp_path):
    src, images = dataset
    assert np.array_equal(AREA_5B_CORRECTION, C)
    report = import_s3dis(src, tmp_path / "out", images=images, areas=["Area_5"])
    assert report.frames == 3 and report.frames_dropped_low_agreement == 0
    assert (report.area_5b_frames_corrected, report.area_5b_frames_kept, report.area_5b_frames_dropped_low_agreement) \
        == (2, 2, 0)
    assert report.area_5b_frames_by_room == {"Area_5/office_2": {"corrected": 2, "kept": 2, "dropped_low_agreement": 0}}
    scene = Scene.load(tmp_path / "out" / "Area_5" / "office_2")
    assert [v.name for v in scene.views] == [f"{UUID}_frame_{j}" for j in range(3)]  # area_5a's, then area_5b's
    np.testing.assert_allclose(scene.views[1].cam_to_world, scene.views[0].cam_to_world, atol=1e-9)
    np.testing.assert_allclose(scene.views[2].cam_to_world, POSE_2, atol=1e-9)
    corr = project_scene(scene, ProjectionConfig(occlusion="depth"))
    # The area_5b frame taken from the area_5a frame's place sees every point at the same pixel.
    assert corr.visible[0].sum() > 500 and torch.equal(corr.visible[1], corr.visible[0])
    seen = corr.in_frame[0]
    assert torch.equal(corr.in_frame[1], seen)
    torch.testing.assert_close(corr.uv[1, seen], corr.uv[0, seen], atol=1e-3, rtol=0)
    # The other one sees the wall point it looks at in the image centre, and what its rendered depth shows.
    i = int(np.argmin(np.linalg.norm(scene.coord - np.float32([1.4, 3.0, 1.5]), axis=1)))
    assert corr.uv[2, i].tolist() == pytest.approx([20.0, 20.0], abs=1e-3) and bool(corr.visible[2, i])
    assert corr.visible[2].sum() > 500
    # Read as stored (no correction), the same poses put the points elsewhere, where the depth maps disagree.
    raw = [dataclasses.replace(v, cam_to_world=read_pose(next((images / "area_5b" / "data" / "pose").glob(
        f"*frame_{j}_domain_pose.json")))[1]) for j, v in ((1, scene.views[1]), (2, scene.views[2]))]
    uncorrected = project_scene(dataclasses.replace(scene, views=raw), ProjectionConfig(occlusion="depth"))
    assert (uncorrected.uv[1, i] - 20).abs().max() > 5  # the wall point is no longer in the centre
    assert uncorrected.in_frame.sum() > 1000 and not uncorrected.visible.any()


def test_area_5b_without_the_correction_is_dropped(dataset, tmp_path, capsys):
    src, images = dataset
    out = tmp_path / "out"
    assert main(["import", "s3dis", str(src / "Area_5"), str(out), "--images", str(images),
                 "--no-area-5b-correction"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 1 and report["frames_dropped_low_agreement"] == 2  # the area_5b frames
    assert report["agreement_by_area"]["area_5b"]["below_min"] == 2 and report["area_5b_frames_corrected"] == 0
    assert [v.name for v in Scene.load(out / "Area_5" / "office_2").views] == [f"{UUID}_frame_0"]


def test_area_5_captures_and_frame_selection(dataset, tmp_path):
    _, images = dataset
    frames = index_frames(images)
    assert {k: [f.area for f in v] for k, v in frames.items()} == {
        ("Area_1", "office_1"): ["area_1", "area_1"], ("Area_1", "office_9"): ["area_1"],
        ("Area_5", "office_2"): ["area_5a", "area_5b", "area_5b"]}
    assert index_frames(images / "area_5b").keys() == {("Area_5", "office_2")}


def test_bad_pose_and_missing_files_name_file_and_field(dataset, tmp_path):
    src, images = dataset
    pose_file = next((images / "area_1" / "data" / "pose").glob("*office_1_frame_0*"))
    doc = json.loads(pose_file.read_text())
    pose_file.write_text(json.dumps({k: v for k, v in doc.items() if k != "camera_k_matrix"}))
    with pytest.raises(SceneError, match=r"office_1_frame_0_domain_pose.json: camera_k_matrix: missing"):
        import_s3dis(src, tmp_path / "out", images=images, areas=["Area_1"])
    pose_file.write_text(json.dumps({**doc, "camera_rt_matrix": (2 * np.asarray(doc["camera_rt_matrix"])).tolist()}))
    with pytest.raises(SceneError, match=r"camera_rt_matrix: its 3x3 part is not a rotation"):
        import_s3dis(src, tmp_path / "out", images=images, areas=["Area_1"])
    pose_file.write_text(json.dumps(doc))
    depth_file = next((images / "area_1" / "data" / "depth").glob("*office_1_frame_1*"))
    Image.fromarray(np.zeros((20, 40), np.uint16)).save(depth_file)
    with pytest.raises(SceneError, match=r"office_1_frame_1_domain_depth.png: depth: has shape \(20, 40\)"):
        import_s3dis(src, tmp_path / "out", images=images, areas=["Area_1"])
    depth_file.unlink()
    with pytest.raises(SceneError, match=r"office_1_frame_1_domain_depth.png: depth: missing"):
        import_s3dis(src, tmp_path / "out", images=images, areas=["Area_1"])
    aligned = src.rename(src.parent / "Stanford3dDataset_v1.2_Aligned_Version")
    with pytest.raises(DitrError, match="Aligned_Version rotates every room"):
        import_s3dis(aligned, tmp_path / "out", images=images)
    (tmp_path / "empty" / "Area_2").mkdir(parents=True)
    with pytest.raises(DitrError, match=r"no room folders in \['Area_2'\]"):
        import_s3dis(tmp_path / "empty", tmp_path / "out2")
    with pytest.raises(DitrError, match="no Area_N folders"):
        import_s3dis(images, tmp_path / "out2")  # a 2D-3D-S folder is no S3DIS download
    with pytest.raises(DitrError, match=r"no such area\(s\) \['Area_7'\]"):
        import_s3dis(aligned, tmp_path / "out", areas=["Area_7"])


def test_cli_report_and_area_splits(dataset, tmp_path, capsys):
    src, images = dataset
    out = tmp_path / "out"
    assert main(["import", "s3dis", str(src / "Area_1"), str(out), "--images", str(images), "--max-frames", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "s3dis" and report["scenes"] == ["Area_1/office_1"]
    assert report["frames"] == 1 and report["frames_unmatched"] == 1  # area 5 is not being imported
    assert resolve_scenes(out, ["Area_1"]) == [out / "Area_1" / "office_1"]
