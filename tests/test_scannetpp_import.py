"""ScanNet++ importer: nerfstudio -> OpenCV camera conversion, COLMAP pose check, labels, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData, PlyElement

from ditr.cli import main
from ditr.errors import DitrError, SceneError
from ditr.io.scannetpp import import_scannetpp
from ditr.projection import ProjectionConfig, project_scene
from ditr.scene import Scene

pytestmark = pytest.mark.usefixtures("single_thread")

SCENE = "0a5c013435"
W, H, F, CX, CY = 128, 96, 100.0, 64.0, 48.0
TARGET = np.array([1.0, 2.0, 1.2])  # mesh frame, z up
#: mesh points and the pixel each must land on in the first camera (at CAMERAS[0], looking along +y at TARGET)
POINTS = np.array([TARGET, TARGET + [0, 0, 0.3], TARGET + [0.3, 0, 0], TARGET + [0.3, 0, 0.3]])
PIXELS = np.array([[CX, CY], [CX, CY - F * 0.3 / 3], [CX + F * 0.3 / 3, CY], [CX + 10, CY - 10]])
CAMERAS = [np.array([1.0, -1.0, 1.2]), np.array([1.0, -0.5, 1.2])]
#: world axes of ScanNet++'s nerfstudio files: mesh (x, y, z) -> (y, x, -z)
NS_WORLD = np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]])


def opengl_look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """camera-to-world of an OpenGL camera (x right, y up, z backwards) at ``eye`` looking at ``target``."""
    back = (eye - target) / np.linalg.norm(eye - target)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(back, right), back, eye
    return pose


def nerfstudio_pose(eye: np.ndarray, world: np.ndarray = NS_WORLD) -> list:
    """The transform_matrix ScanNet++ stores: an OpenGL camera, in world axes ``world`` @ mesh."""
    return opengl_look_at(world @ eye, world @ TARGET, world @ [0.0, 0, 1]).tolist()


def colmap_line(i: int, eye: np.ndarray, name: str) -> str:
    """images.txt record of an OpenCV camera at ``eye`` looking along +y: world-to-camera = Rx(+90 deg)."""
    r_w2c = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    t = -r_w2c @ eye
    s = np.sqrt(0.5)
    return f"{i} {s} {s} 0 0 {t[0]} {t[1]} {t[2]} 1 {name}\n"


def write_mesh(path: Path, coord: np.ndarray, faces: np.ndarray) -> None:
    v = np.zeros(len(coord),
                 dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    v["x"], v["y"], v["z"] = coord.T
    v["red"] = 50
    f = np.zeros(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    f["vertex_indices"] = faces
    PlyData([PlyElement.describe(v, "vertex"),
             PlyElement.describe(f, "face", len_types={"vertex_indices": "u1"})]).write(str(path))


def write_scene(root: Path, *, world: np.ndarray = NS_WORLD, colmap: bool = True, extra: dict | None = None) -> Path:
    scene = root / "data" / SCENE
    (scene / "scans").mkdir(parents=True)
    write_mesh(scene / "scans" / "mesh_aligned_0.05.ply", POINTS, np.array([[0, 2, 1], [1, 2, 3]]))
    (scene / "scans" / "segments.json").write_text(json.dumps({"segIndices": [7, 7, 8, 9]}))
    groups = [{"id": 0, "objectId": 0, "label": "wall", "segments": [7]},
              {"id": 1, "objectId": 1, "label": "office chair", "segments": [8]}]
    (scene / "scans" / "segments_anno.json").write_text(json.dumps({"segGroups": groups}))
    images = scene / "dslr" / "resized_undistorted_images"
    images.mkdir(parents=True)
    for name in ("DSC00001.JPG", "DSC00002.JPG", "DSC00003.JPG"):
        Image.new("RGB", (W, H), (90, 90, 90)).save(images / name, format="JPEG")
    doc = {"camera_model": "OPENCV", "fl_x": F, "fl_y": F, "cx": CX, "cy": CY, "w": W, "h": H,
           "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
           "frames": [{"file_path": "DSC00001.JPG", "transform_matrix": nerfstudio_pose(CAMERAS[0], world)},
                      {"file_path": "DSC00002.JPG", "transform_matrix": nerfstudio_pose(CAMERAS[0], world),
                       "is_bad": True}],
           "test_frames": [{"file_path": "DSC00003.JPG", "transform_matrix": nerfstudio_pose(CAMERAS[1], world)}],
           **(extra or {})}
    (scene / "dslr" / "nerfstudio").mkdir()
    (scene / "dslr" / "nerfstudio" / "transforms_undistorted.json").write_text(json.dumps(doc))
    if colmap:
        (scene / "dslr" / "colmap").mkdir()
        (scene / "dslr" / "colmap" / "images.txt").write_text(
            "# Image list with two lines of data per image:\n"
            + colmap_line(1, CAMERAS[0], "DSC00001.JPG") + "\n"
            + colmap_line(3, CAMERAS[1], "DSC00003.JPG") + "0.5 0.5 -1\n")
    return scene


def test_known_points_land_on_known_pixels(tmp_path):
    write_scene(tmp_path / "src")
    report = import_scannetpp(tmp_path / "src", tmp_path / "out")
    assert report.scenes == [SCENE] and report.frames == 2 and report.skipped_bad_frames == 1
    assert report.poses_checked_against_colmap == 2
    scene = Scene.load(tmp_path / "out" / SCENE)
    assert [v.name for v in scene.views] == ["DSC00001", "DSC00003"]
    corr = project_scene(scene, ProjectionConfig(occlusion="none"))
    np.testing.assert_allclose(corr.uv[0].numpy(), PIXELS, atol=1e-3)
    assert corr.in_frame.all()
    np.testing.assert_allclose(corr.depth[0].numpy(), [3, 3, 3, 3], atol=1e-5)
    np.testing.assert_allclose(corr.depth[1].numpy(), [2.5] * 4, atol=1e-5)


def test_applied_transform_is_undone(tmp_path):
    a = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # nerfstudio's newer COLMAP export: swap y and z, negate
    write_scene(tmp_path / "src", world=a, extra={"applied_transform": np.c_[a, [0, 0, 0]].tolist()})
    import_scannetpp(tmp_path / "src", tmp_path / "out")
    corr = project_scene(Scene.load(tmp_path / "out" / SCENE), ProjectionConfig(occlusion="none"))
    np.testing.assert_allclose(corr.uv[0].numpy(), PIXELS, atol=1e-3)


def test_poses_disagreeing_with_colmap_are_an_error(tmp_path):
    write_scene(tmp_path / "src", world=np.eye(3))  # an OpenGL pose in the mesh frame: not ScanNet++'s convention
    with pytest.raises(SceneError,
                       match=r"transforms_undistorted\.json: frames\[DSC00001\]\.transform_matrix: .*images\.txt"):
        import_scannetpp(tmp_path / "src", tmp_path / "out")


def test_labels_with_and_without_a_class_list(tmp_path):
    write_scene(tmp_path / "src", colmap=False)
    report = import_scannetpp(tmp_path / "src", tmp_path / "plain")
    scene = Scene.load(tmp_path / "plain" / SCENE)
    assert report.poses_checked_against_colmap == 0
    np.testing.assert_array_equal(scene.attributes["instance"], [0, 0, 1, -1])
    assert "segment" not in scene.attributes and scene.meta["instance_labels"] == {"0": "wall", "1": "office chair"}
    classes = tmp_path / "top100.txt"
    classes.write_text("chair\nwall\ntable\n")
    report = import_scannetpp(tmp_path / "src", tmp_path / "labelled", classes=classes)
    scene = Scene.load(tmp_path / "labelled" / SCENE)
    np.testing.assert_array_equal(scene.segment(), [1, 1, -1, -1])
    assert scene.class_names == ["chair", "wall", "table"] and report.labels_not_in_classes == ["office chair"]
    normal = scene.attributes["normal"]
    np.testing.assert_allclose(normal, np.tile([0, -1, 0], (4, 1)), atol=1e-6)  # the quad faces the cameras


def test_distorted_or_missing_undistorted_cameras_are_errors(tmp_path):
    scene = write_scene(tmp_path / "a", extra={"k1": 0.1})
    with pytest.raises(SceneError, match="only undistorted images are supported"):
        import_scannetpp(tmp_path / "a", tmp_path / "out")
    ns = scene / "dslr" / "nerfstudio"
    (ns / "transforms_undistorted.json").rename(ns / "transforms.json")
    with pytest.raises(SceneError, match=r"transforms_undistorted\.json: missing.*dslr\.undistort"):
        import_scannetpp(tmp_path / "a", tmp_path / "out")
    scene = write_scene(tmp_path / "b", extra={"w": 64})
    with pytest.raises(SceneError, match=r"DSC00001\.JPG: frames\[0\]\.image: is 128x96, "
                                         r"transforms_undistorted\.json declares 64x96"):
        import_scannetpp(tmp_path / "b", tmp_path / "out")
    with pytest.raises(DitrError, match="class list missing"):
        import_scannetpp(tmp_path / "b", tmp_path / "out", classes=tmp_path / "nope.txt")


def test_cli_writes_official_splits(tmp_path, capsys):
    src = tmp_path / "src"
    write_scene(src)
    (src / "splits").mkdir()
    (src / "splits" / "nvs_sem_train.txt").write_text(f"{SCENE}\n")
    (src / "splits" / "nvs_sem_val.txt").write_text("7b6477cb95\n")
    assert main(["import", "scannetpp", str(src), str(tmp_path / "out"), "--max-frames", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "scannetpp" and report["frames"] == 1 and report["splits"] == {"train": 1, "val": 0}
    assert (tmp_path / "out" / "splits" / "train.txt").read_text() == f"{SCENE}\n"
