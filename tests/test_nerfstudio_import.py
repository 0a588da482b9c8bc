"""nerfstudio / instant-ngp import: a synthetic room written as transforms.json (OpenGL camera-to-world)
plus a PLY must import to the room's own point-pixel correspondences (issue 8)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_colmap_import import assert_same_correspondences, synthetic_room, write_images

from ditr.errors import DitrError, SceneError
from ditr.io.capture import OPENGL_TO_OPENCV
from ditr.io.nerfstudio import import_nerfstudio
from ditr.io.ply import write_ply
from ditr.projection import ProjectionConfig
from ditr.scene import Scene, write_depth_image

pytestmark = pytest.mark.usefixtures("single_thread")

#: nerfstudio's change of world axes for COLMAP data: swap x and y, negate z.
APPLIED = np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]])


def _ply(path, coord, scene):
    n = scene.attributes["normal"]
    write_ply(path, coord, scene.attributes["color"], nx=n[:, 0], ny=n[:, 1], nz=n[:, 2])


def write_nerfstudio(root, *, world: np.ndarray | None = None, per_frame: bool = False, **extra) -> dict:
    """transforms.json with OpenGL camera-to-world matrices (optionally in a changed world frame).

    The synthetic cameras differ in focal length, so frames after the first override the global
    intrinsics (all frames do with ``per_frame``, and there are no global ones then).
    """
    scene = synthetic_room()
    names = write_images(scene, root / "images")
    world = np.eye(4) if world is None else world
    v0 = scene.views[0]
    k = v0.intrinsics
    camera = {"fl_x": k[0, 0], "fl_y": k[1, 1], "cx": k[0, 2], "cy": k[1, 2], "w": v0.width, "h": v0.height,
              "camera_model": "OPENCV", "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0}
    frames = []
    for i, (v, name) in enumerate(zip(scene.views, names)):
        frame = {"file_path": f"images/{name}",
                 "transform_matrix": (world @ v.cam_to_world @ OPENGL_TO_OPENCV).tolist()}
        if per_frame or i:
            k = v.intrinsics
            frame.update(fl_x=k[0, 0], fl_y=k[1, 1], cx=k[0, 2], cy=k[1, 2])
        frames.append(frame)
    doc = {**({} if per_frame else camera), "frames": frames, **extra}
    (root / "transforms.json").write_text(json.dumps(doc))
    return doc

def capture_with_points(tmp_path, **extra) -> tuple:
    """(scene, root, transforms doc): a synthetic room as a nerfstudio capture whose points are the
    ``ply_file_path`` of its transforms.json."""
    scene = synthetic_room()
    root = tmp_path / "processed"
    doc = write_nerfstudio(root, ply_file_path="sparse_pc.ply", **extra)
    _ply(root / "sparse_pc.ply", scene.coord, scene)
    return scene, root, doc



def test_nerfstudio_import_reproduces_correspondences(tmp_path):
    scene, root, doc = capture_with_points(tmp_path, per_frame=True)
    report = import_nerfstudio(root, tmp_path / "out")
    imported = Scene.load(tmp_path / "out")
    assert report.views == 4 and report.points == scene.num_points and report.notes == []
    np.testing.assert_array_equal(imported.coord, scene.coord)
    for a, b in zip(scene.views, imported.views):
        np.testing.assert_allclose(b.cam_to_world, a.cam_to_world, atol=1e-12)
    assert_same_correspondences(scene, imported)
    assert_same_correspondences(scene, imported, ProjectionConfig(occlusion="splat"))  # with the PLY's normals


def test_instant_ngp_camera_angle_only(tmp_path):
    """instant-ngp: camera_angle_x instead of fl_x, no w/h, file_path without extension; aabb_scale noted."""
    scene = synthetic_room()
    root = tmp_path / "ngp"
    write_images(scene, root / "train")
    v = scene.views[0]
    angle = 2 * math.atan(0.5 * v.width / v.intrinsics[0, 0])
    frames = [{"file_path": f"./train/{view.name}", "transform_matrix": (view.cam_to_world @ OPENGL_TO_OPENCV).tolist(),
               "camera_angle_x": 2 * math.atan(0.5 * view.width / view.intrinsics[0, 0])} for view in scene.views]
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": angle, "aabb_scale": 4, "scale": 0.33,
                                                            "offset": [0.5, 0.5, 0.5], "frames": frames}))
    np.save(root / "points.npy", np.column_stack([scene.coord, scene.attributes["color"]]).astype(np.float64))
    with pytest.raises(DitrError,
                       match=r"transforms.json: transforms file not found \(found \['transforms_train.json'\]"):
        import_nerfstudio(root, tmp_path / "out", points=root / "points.npy")
    report = import_nerfstudio(root, tmp_path / "out", transforms="transforms_train.json", points=root / "points.npy")
    assert "aabb_scale" in report.notes[0] and "not applied" in report.notes[0]
    imported = Scene.load(tmp_path / "out")
    assert [w.name for w in imported.views] == [w.name for w in scene.views]
    np.testing.assert_allclose(imported.views[0].intrinsics, v.intrinsics, atol=1e-9)
    assert_same_correspondences(scene, imported)


def test_points_in_colmap_frame_get_applied_transform(tmp_path):
    """Poses in nerfstudio's re-axed world; the point cloud still in COLMAP's: --points-frame colmap."""
    scene = synthetic_room()
    root = tmp_path / "processed"
    world = np.vstack([APPLIED, [0, 0, 0, 1]])
    write_nerfstudio(root, world=world, applied_transform=APPLIED.tolist())
    _ply(tmp_path / "fused.ply", scene.coord, scene)  # COLMAP frame = the room's own frame here
    report = import_nerfstudio(root, tmp_path / "out", points=tmp_path / "fused.ply", points_frame="colmap")
    assert report.source["points_frame"] == "colmap"
    imported = Scene.load(tmp_path / "out")
    np.testing.assert_allclose(imported.coord, scene.coord @ APPLIED[:, :3].T, atol=1e-6)
    np.testing.assert_allclose(imported.attributes["normal"], scene.attributes["normal"] @ APPLIED[:, :3].T, atol=1e-6)
    # the estimated point spacing counts occupied voxels, which depends on the axes: fix it here
    assert_same_correspondences(scene, imported, ProjectionConfig(occlusion="splat", point_spacing=0.05))
    with pytest.raises(SceneError, match="applied_transform: missing"):
        write_nerfstudio(tmp_path / "plain")
        import_nerfstudio(tmp_path / "plain", tmp_path / "out2", points=tmp_path / "fused.ply", points_frame="colmap")


def test_points_in_dataparser_frame_are_normalised_back(tmp_path):
    scene = synthetic_room()
    root = tmp_path / "processed"
    write_nerfstudio(root)
    c, s = math.cos(0.4), math.sin(0.4)
    transform = np.array([[c, -s, 0, 0.3], [s, c, 0, -1.2], [0, 0, 1, 0.5]])
    (tmp_path / "dataparser_transforms.json").write_text(json.dumps({"transform": transform.tolist(), "scale": 0.25}))
    normalised = 0.25 * (scene.coord.astype(np.float64) @ transform[:, :3].T + transform[:, 3])
    np.save(tmp_path / "export.npy", normalised)
    with pytest.raises(DitrError, match="needs --dataparser-transforms"):
        import_nerfstudio(root, tmp_path / "out", points=tmp_path / "export.npy", points_frame="dataparser")
    import_nerfstudio(root, tmp_path / "out", points=tmp_path / "export.npy", points_frame="dataparser",
                      dataparser_transforms=tmp_path / "dataparser_transforms.json")
    imported = Scene.load(tmp_path / "out")
    np.testing.assert_allclose(imported.coord, scene.coord, atol=1e-5)
    assert_same_correspondences(scene, imported, ProjectionConfig(occlusion="none"))


def test_depth_maps_become_view_depth(tmp_path):
    """Per-frame depth_file_path (mm PNG) is used; a half-resolution depth map gets scaled intrinsics."""
    scene, root, doc = capture_with_points(tmp_path)
    (root / "depth").mkdir()
    for i, (frame, v) in enumerate(zip(doc["frames"], scene.views)):
        depth = v.read_depth() if i else v.read_depth()[::2, ::2]
        write_depth_image(root / "depth" / f"{v.name}.png", depth)
        frame["depth_file_path"] = f"depth/{v.name}.png"
    (root / "transforms.json").write_text(json.dumps(doc))
    import_nerfstudio(root, tmp_path / "out")
    imported = Scene.load(tmp_path / "out")
    half = imported.views[0]
    assert (half.depth_width, half.depth_height) == (80, 60)
    np.testing.assert_allclose(half.depth_intrinsics[:2], scene.views[0].intrinsics[:2] / 2)
    full = [i for i in range(1, 4)]
    for i in full:
        np.testing.assert_allclose(imported.views[i].read_depth(), scene.views[i].read_depth(), atol=6e-4)
    depth_only = ProjectionConfig(occlusion="depth")
    a = Scene(coord=scene.coord, views=scene.views[1:])
    b = Scene(coord=imported.coord, views=imported.views[1:])
    assert_same_correspondences(a, b, depth_only)


def test_distortion_size_and_fisheye_errors(tmp_path):
    scene, root, doc = capture_with_points(tmp_path)
    doc = json.loads((root / "transforms.json").read_text())
    (root / "transforms.json").write_text(json.dumps({**doc, "k1": 0.05}))
    assert import_nerfstudio(root, tmp_path / "undistorted").undistorted_views == 4  # tests/test_undistort.py
    report = import_nerfstudio(root, tmp_path / "out", ignore_distortion=True)
    assert report.distortion_ignored_views == 4 and report.distortion_ignored_max_px > 1.0
    (root / "transforms.json").write_text(json.dumps({**doc, "w": 320}))
    with pytest.raises(SceneError, match=r"view_00.png: frames\[0\].w/h: the image is 160x120, "
                                         r"transforms.json declares 320x120"):
        import_nerfstudio(root, tmp_path / "out")
    (root / "transforms.json").write_text(json.dumps({**doc, "camera_model": "EQUIRECTANGULAR"}))
    with pytest.raises(SceneError, match="camera_model: EQUIRECTANGULAR images are not pinhole images"):
        import_nerfstudio(root, tmp_path / "out")
    (root / "transforms.json").write_text(json.dumps({**doc, "camera_model": "OPENCV_FISHEYE"}))
    with pytest.raises(SceneError, match="camera_model: fisheye images are not pinhole images"):
        import_nerfstudio(root, tmp_path / "out", ignore_distortion=True)
    bad = json.loads(json.dumps(doc))
    bad["frames"][2]["transform_matrix"][0][0] *= -1  # a mirrored pose: one axis flipped
    (root / "transforms.json").write_text(json.dumps(bad))
    with pytest.raises(SceneError, match=r"frames\[2\].transform_matrix: rotation part is"):
        import_nerfstudio(root, tmp_path / "out")
    del doc["ply_file_path"]
    (root / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(SceneError, match="ply_file_path: missing: give the points with --points"):
        import_nerfstudio(root, tmp_path / "out")
    (root / "images" / "view_01.png").unlink()
    report = import_nerfstudio(root, tmp_path / "out", points=root / "sparse_pc.ply")
    assert report.skipped_missing_image == 1 and report.views == 3


def test_cli(tmp_path, capsys):
    from ditr.cli import main

    scene, root, doc = capture_with_points(tmp_path)
    assert main(["import", "nerfstudio", str(root / "transforms.json"), str(tmp_path / "out"), "--up", "cameras"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert '"dataset": "nerfstudio"' in line and '"up": "cameras"' in line
