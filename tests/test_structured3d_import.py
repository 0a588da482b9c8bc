"""Structured3D importer on a box room rendered analytically in the dataset's native layout.

The room is x in [0, 4], y in [0, 3], z in [0, 2.8] m with a table (a box) on the floor. Two
perspective views look at it; their depth (mm, z-depth), NYU40 semantic image, colours and
``camera_pose.txt`` are computed from the geometry, so the back-projected points must land on the
room's surfaces, carry the right labels and be seen by the views they came from.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import look_at
from ditr.cli import main
from ditr.errors import DitrError, SceneError
from ditr.io.structured3d import NYU40_TO_SCANNET20, import_structured3d, read_camera_pose, voxel_merge
from ditr.projection import ProjectionConfig, project_scene
from ditr.scene import Scene

pytestmark = pytest.mark.usefixtures("single_thread")

ROOM = np.array([[0.0, 0.0, 0.0], [4.0, 3.0, 2.8]])
TABLE = np.array([[1.5, 1.0, 0.0], [2.5, 2.0, 0.75]])
WALL, FLOOR, TABLE_ID, CEILING = 1, 2, 7, 22  # NYU40 ids
COLOURS = {WALL: (200, 200, 190), FLOOR: (120, 80, 40), TABLE_ID: (30, 60, 200), CEILING: (250, 250, 250)}
W, H, XFOV = 96, 54, 0.6
YFOV = float(np.arctan(np.tan(XFOV) * H / W))
CAMERAS = {"0": ([0.5, 0.5, 1.5], [3.0, 2.5, 0.6]), "1": ([3.5, 2.6, 1.6], [0.2, 0.3, 1.9])}


def render(eye, target):
    """z-depth (m), NYU40 ids and colours of the box room with its table, at every pixel centre."""
    pose = look_at(eye, target)
    fx, fy = W / 2 / np.tan(XFOV), H / 2 / np.tan(YFOV)
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    rays = np.stack([(u - W / 2) / fx, (v - H / 2) / fy, np.ones_like(u)], -1) @ pose[:3, :3].T
    eye = np.asarray(eye, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        exit_t = np.where(rays > 0, (ROOM[1] - eye) / rays, (ROOM[0] - eye) / rays)  # leaving the room
        near = np.minimum((TABLE[0] - eye) / rays, (TABLE[1] - eye) / rays)
        far = np.maximum((TABLE[0] - eye) / rays, (TABLE[1] - eye) / rays)
    t_room, axis = exit_t.min(-1), exit_t.argmin(-1)
    enter, leave = np.nanmax(near, -1), np.nanmin(far, -1)
    on_table = (enter <= leave) & (enter > 0) & (enter < t_room)
    depth = np.where(on_table, enter, t_room)
    up = rays[..., 2] > 0
    label = np.where(on_table, TABLE_ID, np.where(axis == 2, np.where(up, CEILING, FLOOR), WALL))
    rgb = np.zeros((H, W, 3), np.uint8)
    for nyu, colour in COLOURS.items():
        rgb[label == nyu] = colour
    return depth, label, rgb, pose


def write_position(folder, eye, target, *, depth_edit=None):
    folder.mkdir(parents=True, exist_ok=True)
    depth, label, rgb, pose = render(eye, target)
    if depth_edit is not None:
        depth_edit(depth)
    Image.fromarray(rgb).save(folder / "rgb_rawlight.png")
    Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(folder / "depth.png")
    Image.fromarray(label.astype(np.uint8)).save(folder / "semantic.png")
    toward = np.asarray(target) - np.asarray(eye)
    up = -pose[:3, 1]  # the camera's up direction, as Structured3D stores it
    values = [*(np.asarray(eye) * 1000), *toward, *up, XFOV, YFOV, 1]
    (folder / "camera_pose.txt").write_text(" ".join(f"{x:.9g}" for x in values) + "\n")


def write_room(root, scene="scene_00000", room="485142", depth_edit=None):
    """The room's two positions; ``depth_edit`` alters the depth of position 0 (which sees the table)."""
    for position, (eye, target) in CAMERAS.items():
        write_position(root / scene / "2D_rendering" / room / "perspective" / "full" / position, eye, target,
                       depth_edit=depth_edit if position == "0" else None)
    return root / scene / "2D_rendering" / room


def surface_distance(p):
    """Distance of points to the nearest surface: the room's six faces or the table's box."""
    room = np.minimum(np.abs(p - ROOM[0]), np.abs(p - ROOM[1])).min(1)
    outside = np.maximum(np.maximum(TABLE[0] - p, p - TABLE[1]), 0)
    inside = np.minimum(p - TABLE[0], TABLE[1] - p).min(1)
    table = np.where(np.linalg.norm(outside, axis=1) > 0, np.linalg.norm(outside, axis=1), np.abs(inside))
    return np.minimum(room, table)


@pytest.fixture
def imported(tmp_path):
    src = tmp_path / "Structured3D"
    write_room(src)
    report = import_structured3d(src, tmp_path / "out")
    return report, Scene.load(tmp_path / "out" / "scene_00000_room_485142")


def test_backprojection_recovers_the_room_in_metres(imported):
    report, scene = imported
    assert report.scenes == ["scene_00000_room_485142"] and report.views == 2
    lo, hi = scene.coord.min(0), scene.coord.max(0)
    assert np.all(lo > -0.01) and np.all(hi < ROOM[1] + 0.01) and np.all(hi - lo > [3.5, 2.5, 2.5])  # mm -> m
    dist = surface_distance(scene.coord.astype(np.float64))
    assert np.quantile(dist, 0.99) < 0.005 and dist.max() < 0.02  # voxel means round corners by < 1 cell
    # One point per 2 cm cell: no two points closer than the grid allows along all three axes.
    cells = np.floor((scene.coord - scene.coord.min(0)) / 0.02).astype(int)
    assert len(np.unique(cells, axis=0)) >= 0.95 * scene.num_points
    assert report.pixels_backprojected > scene.num_points


def test_labels_are_mapped_from_nyu40_to_scannet20(imported):
    _, scene = imported
    seg, seg40, p = scene.attributes["segment"], scene.attributes["segment40"], scene.coord
    names = scene.meta["class_names"]
    off_table = (p[:, 0] < 1.4) | (p[:, 0] > 2.6) | (p[:, 1] < 0.9) | (p[:, 1] > 2.1)
    floor = (p[:, 2] < 0.005) & off_table & (p[:, 0] > 0.05) & (p[:, 0] < 3.95) & (p[:, 1] > 0.05) & (p[:, 1] < 2.95)
    top = (np.abs(p[:, 2] - 0.75) < 0.005) & ~off_table
    ceiling = (p[:, 2] > 2.795) & np.all((p[:, :2] > 0.05) & (p[:, :2] < ROOM[1, :2] - 0.05), axis=1)
    assert floor.sum() > 100 and top.sum() > 20 and ceiling.sum() > 100
    assert {names[s] for s in seg[floor]} == {"floor"} and set(seg40[floor]) == {FLOOR - 1}
    assert {names[s] for s in seg[top]} == {"table"} and set(seg40[top]) == {TABLE_ID - 1}
    assert set(seg[ceiling]) == {-1} and set(seg40[ceiling]) == {CEILING - 1}  # ScanNet-20 has no ceiling
    label = scene.views[0].read_label()  # per-pixel ScanNet-20 ids, -1 on the ceiling
    depth, nyu, _, _ = render(*CAMERAS["0"])
    assert np.array_equal(label, NYU40_TO_SCANNET20[nyu])


def test_normals_face_into_the_room(imported):
    _, scene = imported
    p, n = scene.coord, scene.attributes["normal"]
    floor = ((p[:, 2] < 0.005) & ((p[:, 0] < 1.3) | (p[:, 0] > 2.7)) & (p[:, 0] > 0.1) & (p[:, 0] < 3.9)
             & (p[:, 1] > 0.1) & (p[:, 1] < 2.9))
    wall = (p[:, 0] < 0.005) & (p[:, 2] > 0.1) & (p[:, 2] < 2.7) & (p[:, 1] > 0.1) & (p[:, 1] < 2.9)
    assert floor.sum() > 100 and wall.sum() > 100
    assert np.all(n[floor] @ [0, 0, 1] > 0.99) and np.all(n[wall] @ [1, 0, 0] > 0.99)


def test_views_see_the_points_made_from_them(imported):
    _, scene = imported
    corr = project_scene(scene, ProjectionConfig(occlusion="depth"))
    assert float(corr.seen.float().mean()) > 0.99
    in_frame = corr.in_frame.sum(1).float()
    assert np.all((corr.visible.sum(1).float() / in_frame).numpy() > 0.9)  # the rest is hidden by the table
    assert scene.views[0].depth_scale == 1000 and scene.views[0].read_depth().max() < 5.5


def test_depth_discontinuities_are_dropped(tmp_path):
    def blend(depth):  # the renderer's mix of foreground and background at the table's silhouette
        table_edge = np.flatnonzero(np.abs(np.diff(depth[30])) > 0.3)[0]
        depth[28:33, table_edge + 1] = (depth[28:33, table_edge] + depth[28:33, table_edge + 2]) / 2

    src = tmp_path / "Structured3D"
    write_room(src, depth_edit=blend)
    kept = import_structured3d(src, tmp_path / "kept", edge_threshold=0)
    dropped = import_structured3d(src, tmp_path / "clean")
    flying = surface_distance(Scene.load(tmp_path / "kept" / "scene_00000_room_485142").coord.astype(float))
    clean = surface_distance(Scene.load(tmp_path / "clean" / "scene_00000_room_485142").coord.astype(float))
    assert flying.max() > 0.1 and clean.max() < 0.02
    assert kept.pixels_dropped_discontinuity == 0 and dropped.pixels_dropped_discontinuity > 10


def test_voxel_merge_means_and_majority():
    coord = np.array([[0.001, 0, 0], [0.003, 0, 0], [0.005, 0, 0], [0.05, 0, 0]])
    color = np.array([[0, 0, 0], [10, 10, 10], [20, 20, 20], [5, 5, 5]], np.uint8)
    normal = np.array([[0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0]], float)
    label = np.array([3, 2, 2, -1])
    c, col, n, lab = voxel_merge(coord, color, normal, label, 0.02)
    assert np.allclose(c[:, 0], [0.003, 0.05]) and col[:, 0].tolist() == [10, 5] and lab.tolist() == [2, -1]
    assert np.allclose(np.linalg.norm(n, axis=1), 1)
    assert voxel_merge(coord[:2], color[:2], normal[:2], np.array([4, 1]), 0.02)[3].tolist() == [1]  # tie: smaller id


def test_splits_and_cli(tmp_path, capsys):
    src = tmp_path / "Structured3D"
    write_room(src)
    write_room(src, scene="scene_03100", room="7")
    (src / "scene_03100" / "2D_rendering" / "8" / "panorama" / "full").mkdir(parents=True)  # no perspective views
    blank = write_room(src, scene="scene_03300", room="9")
    for depth in blank.rglob("depth.png"):
        Image.fromarray(np.zeros((H, W), np.uint16)).save(depth)  # rendered, but no depth anywhere
    assert main(["import", "structured3d", str(tmp_path), str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scenes"] == ["scene_00000_room_485142", "scene_03100_room_7"]
    assert report["rooms_without_perspective"] == ["scene_03100_room_8"]
    assert report["rooms_without_depth"] == ["scene_03300_room_9"]
    assert report["splits"] == {"train": 1, "val": 1, "test": 0}
    assert (tmp_path / "out" / "splits" / "val.txt").read_text() == "scene_03100_room_7\n"


def test_bad_camera_pose_and_missing_files_name_file_and_field(tmp_path):
    room = write_room(tmp_path / "Structured3D")
    pose = room / "perspective" / "full" / "1" / "camera_pose.txt"
    good = pose.read_text()
    for text, match in [("1 2 3 4 5 6 7 8 9 10 11", r"1/camera_pose.txt: camera_pose: holds 11 numbers, expected 12"),
                        ("0 0 1000 0 1 0 0 0 1 1.7 0.5 1", r"camera_pose.txt: xfov: half field of view"),
                        ("0 0 1000 0 1 0 0 2 0 0.6 0.4 1", r"camera_pose.txt: ux uy uz: .* parallel"),
                        ("0 0 1000 0 1 0 0 0 1 0.6 zero 1", r"camera_pose.txt: camera_pose: is not a list of numbers")]:
        pose.write_text(text)
        with pytest.raises(SceneError, match=match):
            import_structured3d(tmp_path / "Structured3D", tmp_path / "out")
    pose.write_text(good)
    semantic = room / "perspective" / "full" / "1" / "semantic.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(semantic)
    with pytest.raises(SceneError, match=r"1/semantic.png: semantic: has 3 channels"):
        import_structured3d(tmp_path / "Structured3D", tmp_path / "out")
    semantic.unlink()
    with pytest.raises(SceneError, match=r"1/semantic.png: semantic: missing"):
        import_structured3d(tmp_path / "Structured3D", tmp_path / "out")
    with pytest.raises(DitrError, match="no scene_XXXXX folders"):
        import_structured3d(room, tmp_path / "out")  # a room folder is not a scene folder


def test_camera_pose_convention(tmp_path):
    path = tmp_path / "camera_pose.txt"
    path.write_text("1000 2000 1500 0 1 0 0 0 1 0.6 0.35 1\n")
    k, pose = read_camera_pose(path, 96, 54)
    assert np.allclose(pose[:3, 3], [1, 2, 1.5])  # millimetres -> metres
    assert np.allclose(pose[:3, :3], [[1, 0, 0], [0, 0, 1], [0, -1, 0]])  # columns: right, down (-z), view direction
    assert np.isclose(k[0, 0], 48 / np.tan(0.6)) and np.isclose(k[1, 1], 27 / np.tan(0.35))
    assert k[0, 2] == 48 and k[1, 2] == 27
