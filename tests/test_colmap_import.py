"""COLMAP import: a synthetic room written as a COLMAP model (text and binary, sparse and dense)
must import to exactly the same point-pixel correspondences as the room itself (issue 8)."""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ditr.errors import DitrError, SceneError
from ditr.io.colmap import MODEL_BY_NAME, import_colmap
from ditr.io.ply import write_ply
from ditr.projection import ProjectionConfig, project_scene
from ditr.scene import Scene

pytestmark = pytest.mark.usefixtures("single_thread")

SPLAT = ProjectionConfig(occlusion="splat", use_normals=False)


# ------------------------------------------------------------------------ helpers (shared by the other import tests)
@lru_cache(maxsize=1)
def synthetic_room() -> Scene:
    """A small synthetic room (4000 points, 4 views of 160x120) generated once per test session."""
    from ditr.io.synthetic import generate_room

    return generate_room(3, num_points=4000, num_views=4, width=160, height=120)


def write_images(scene: Scene, directory: Path, suffix: str = ".png") -> list[str]:
    """The scene's images as files ``view_XX.png``; returns their names."""
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for v in scene.views:
        Image.fromarray(v.read_image()).save(directory / f"{v.name}{suffix}")
        names.append(f"{v.name}{suffix}")
    return names


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix, by the largest of the four squared components."""
    w2 = 1 + np.trace(r)
    squares = np.array([w2, 1 + r[0, 0] - r[1, 1] - r[2, 2], 1 - r[0, 0] + r[1, 1] - r[2, 2],
                        1 - r[0, 0] - r[1, 1] + r[2, 2]])
    i = int(np.argmax(squares))
    s = 2 * np.sqrt(squares[i])
    if i == 0:
        q = [s / 4, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif i == 1:
        q = [(r[2, 1] - r[1, 2]) / s, s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif i == 2:
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s]
    else:
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4]
    return np.array(q)


def assert_same_correspondences(original: Scene, imported: Scene, config: ProjectionConfig = SPLAT) -> None:
    """in_frame and visible identical, uv within 1e-3 px wherever the point lands in the image."""
    a, b = project_scene(original, config), project_scene(imported, config)
    assert a.view_names == b.view_names
    assert bool((a.in_frame == b.in_frame).all())
    assert float((a.uv - b.uv).abs()[a.in_frame].max()) < 1e-3
    assert bool((a.visible == b.visible).all())
    assert int(a.visible.sum()) > 100


def _camera_line(v) -> tuple[str, list[float]]:
    k = v.intrinsics
    return "PINHOLE", [k[0, 0], k[1, 1], k[0, 2], k[1, 2]]


def write_colmap_text(scene: Scene, model: Path, cameras: list[tuple[str, list[float]]] | None = None) -> None:
    """cameras.txt (one camera per view), images.txt (world->camera quaternions), points3D.txt."""
    model.mkdir(parents=True, exist_ok=True)
    cameras = cameras or [_camera_line(v) for v in scene.views]
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    lines += [f"{i + 1} {name} {v.width} {v.height} " + " ".join(repr(float(p)) for p in params)
              for i, (v, (name, params)) in enumerate(zip(scene.views, cameras))]
    (model / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, v in enumerate(scene.views):
        w2c = np.linalg.inv(v.cam_to_world)
        values = [*rotation_to_quaternion(w2c[:3, :3]), *w2c[:3, 3]]
        lines.append(f"{i + 1} " + " ".join(repr(float(x)) for x in values) + f" {i + 1} {v.name}.png")
        lines.append("" if i % 2 else "12.5 30.25 1 40.0 50.0 -1")  # keypoint lines, one of them empty
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# 3D point list with one line of data per point:",
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    color = scene.attributes["color"]
    lines += [f"{i + 1} {float(x)!r} {float(y)!r} {float(z)!r} {r} {g} {b} 0.5 1 0 2 3"
              for i, ((x, y, z), (r, g, b)) in enumerate(zip(scene.coord, color))]
    (model / "points3D.txt").write_text("\n".join(lines) + "\n")


def write_colmap_binary(scene: Scene, model: Path, cameras: list[tuple[str, list[float]]] | None = None) -> None:
    """The same model in COLMAP's binary layout (a small test writer)."""
    model.mkdir(parents=True, exist_ok=True)
    cameras = cameras or [_camera_line(v) for v in scene.views]
    out = [struct.pack("<Q", len(cameras))]
    for i, (v, (name, params)) in enumerate(zip(scene.views, cameras)):
        out.append(struct.pack("<IiQQ", i + 1, MODEL_BY_NAME[name].id, v.width, v.height))
        out.append(struct.pack(f"<{len(params)}d", *params))
    (model / "cameras.bin").write_bytes(b"".join(out))
    out = [struct.pack("<Q", len(scene.views))]
    for i, v in enumerate(scene.views):
        w2c = np.linalg.inv(v.cam_to_world)
        out.append(struct.pack("<I7dI", i + 1, *rotation_to_quaternion(w2c[:3, :3]), *w2c[:3, 3], i + 1))
        out.append(f"{v.name}.png".encode() + b"\0")
        keypoints = [(10.0, 20.0, 1), (30.0, 40.0, 2**64 - 1)][: i % 3]
        out.append(struct.pack("<Q", len(keypoints)))
        out += [struct.pack("<ddQ", *kp) for kp in keypoints]
    (model / "images.bin").write_bytes(b"".join(out))
    out = [struct.pack("<Q", scene.num_points)]
    for i, (p, c) in enumerate(zip(scene.coord.astype(np.float64), scene.attributes["color"])):
        track = [(1, i), (2, i)][: i % 3]
        out.append(struct.pack("<Q3d3BdQ", i + 1, *p, *c, 0.5, len(track)))
        out += [struct.pack("<II", *t) for t in track]
    (model / "points3D.bin").write_bytes(b"".join(out))


def sparse_project(tmp_path: Path, writer=write_colmap_text, cameras=None) -> Path:
    """A mapper-style project: project/images/*.png and project/sparse/0/."""
    scene = synthetic_room()
    root = tmp_path / "project"
    write_images(scene, root / "images")
    writer(scene, root / "sparse" / "0", cameras)
    return root


# ------------------------------------------------------------------------ tests
def test_colmap_text_import_reproduces_correspondences(tmp_path):
    root = sparse_project(tmp_path)
    report = import_colmap(root, tmp_path / "out")
    imported = Scene.load(tmp_path / "out")
    original = synthetic_room()
    assert report.views == 4 and report.points == original.num_points
    assert report.source["format"] == "txt" and report.point_source.endswith("points3D.txt")
    np.testing.assert_array_equal(imported.coord, original.coord)
    np.testing.assert_array_equal(imported.attributes["color"], original.attributes["color"])
    assert_same_correspondences(original, imported)
    assert_same_correspondences(original, imported, ProjectionConfig(occlusion="none"))
    assert imported.meta["dataset"] == "colmap" and np.allclose(imported.meta["transform_from_source"], np.eye(4))


def test_colmap_binary_import_equals_text(tmp_path):
    text = import_colmap(sparse_project(tmp_path / "t"), tmp_path / "from_text")
    binary = import_colmap(sparse_project(tmp_path / "b", write_colmap_binary), tmp_path / "from_bin")
    assert binary.source["format"] == "bin" and binary.points == text.points
    a, b = Scene.load(tmp_path / "from_text"), Scene.load(tmp_path / "from_bin")
    np.testing.assert_array_equal(a.coord, b.coord)
    np.testing.assert_array_equal(a.attributes["color"], b.attributes["color"])
    for va, vb in zip(a.views, b.views):
        assert va.name == vb.name
        np.testing.assert_allclose(va.cam_to_world, vb.cam_to_world, atol=1e-12)
        np.testing.assert_allclose(va.intrinsics, vb.intrinsics, atol=1e-12)
    assert_same_correspondences(synthetic_room(), b)


def test_dense_workspace_is_preferred_with_fused_points(tmp_path):
    """project/dense (undistorted PINHOLE + fused.ply) wins over project/sparse/0 (distorted OPENCV)."""
    scene = synthetic_room()
    root = tmp_path / "project"
    write_images(scene, root / "images")
    distorted = [("OPENCV", [*_camera_line(v)[1], 0.1, -0.02, 0.001, 0.0]) for v in scene.views]
    write_colmap_text(scene, root / "sparse" / "0", distorted)
    dense = root / "dense"
    write_images(scene, dense / "images")
    write_colmap_binary(scene, dense / "sparse")
    write_ply(dense / "fused.ply", scene.coord, scene.attributes["color"], nx=scene.attributes["normal"][:, 0],
              ny=scene.attributes["normal"][:, 1], nz=scene.attributes["normal"][:, 2])
    report = import_colmap(root, tmp_path / "out")
    assert report.source["model"] == str(dense / "sparse") and report.point_source == str(dense / "fused.ply")
    imported = Scene.load(tmp_path / "out")
    np.testing.assert_allclose(imported.attributes["normal"], scene.attributes["normal"], atol=1e-6)
    assert_same_correspondences(scene, imported, ProjectionConfig(occlusion="splat"))


def test_distorted_cameras_are_undistorted_refused_or_counted(tmp_path):
    scene = synthetic_room()
    radial = [("SIMPLE_RADIAL", [v.intrinsics[0, 0], v.intrinsics[0, 2], v.intrinsics[1, 2], 0.05])
              for v in scene.views]
    root = sparse_project(tmp_path, cameras=radial)
    report = import_colmap(root, tmp_path / "undistorted")  # tests/test_undistort.py checks the pixels
    assert report.undistorted_views == 4 and report.distortion_ignored_views == 0
    fov = [("FOV", [*_camera_line(v)[1], 0.1]) for v in scene.views]  # a model ditr does not undistort
    with pytest.raises(SceneError, match="image_undistorter") as err:
        import_colmap(sparse_project(tmp_path / "fov", cameras=fov), tmp_path / "out")
    assert "cameras.txt" in str(err.value) and "FOV" in str(err.value)
    report = import_colmap(root, tmp_path / "out", ignore_distortion=True)
    assert report.distortion_ignored_views == 4 and report.undistorted_views == 0
    # corner at normalised radius r ~ 0.71: shift = f * r^3 * k ~ 140 * 0.36 * 0.05 ~ 2.5 px
    assert 1.0 < report.distortion_ignored_max_px < 5.0
    zero = [("SIMPLE_RADIAL", [*p[:3], 0.0]) for _, p in radial]  # k = 0 is a pinhole: accepted silently
    report = import_colmap(sparse_project(tmp_path / "zero", cameras=zero), tmp_path / "out_zero")
    assert report.distortion_ignored_views == 0


def test_fisheye_cameras_always_need_undistortion(tmp_path):
    fisheye = [("OPENCV_FISHEYE", [*_camera_line(v)[1], 0.0, 0.0, 0.0, 0.0]) for v in synthetic_room().views]
    root = sparse_project(tmp_path, write_colmap_binary, cameras=fisheye)
    with pytest.raises(SceneError, match="fisheye cameras are not pinholes"):
        import_colmap(root, tmp_path / "out", ignore_distortion=True)
    assert import_colmap(root, tmp_path / "out").undistorted_views == 4


def test_scale_and_up_keep_the_pixels(tmp_path):
    """--scale and --up move points and cameras together: same pixels, coordinates scaled and rotated."""
    root = sparse_project(tmp_path)
    report = import_colmap(root, tmp_path / "out", scale=2.5, up="cameras")
    imported, original = Scene.load(tmp_path / "out"), synthetic_room()
    m = np.array(imported.meta["transform_from_source"])
    np.testing.assert_allclose(imported.coord, original.coord @ m[:3, :3].T + m[:3, 3], atol=1e-4)
    np.testing.assert_allclose(np.linalg.det(m[:3, :3]), 2.5 ** 3)
    assert report.mean_camera_up[2] > 0.9 and report.scale == 2.5
    assert_same_correspondences(original, imported, ProjectionConfig(occlusion="none"))
    # the synthetic cameras are upright in a z-up room: the estimated up is already +z
    np.testing.assert_allclose(m[:3, :3] / 2.5, np.eye(3), atol=0.15)


def test_missing_images_are_counted_and_sizes_checked(tmp_path):
    root = sparse_project(tmp_path)
    (root / "images" / "view_02.png").unlink()
    report = import_colmap(root, tmp_path / "out", frame_step=1)
    assert report.skipped_missing_image == 1 and report.views == 3
    Image.new("RGB", (80, 60)).save(root / "images" / "view_01.png")
    with pytest.raises(SceneError, match=r"view_01.png: camera 2.WIDTH/HEIGHT: the image is 80x60.*160x120"):
        import_colmap(root, tmp_path / "out2")


def test_text_model_errors_name_file_and_line(tmp_path):
    root = sparse_project(tmp_path)
    model = root / "sparse" / "0"
    cameras = (model / "cameras.txt").read_text()
    (model / "cameras.txt").write_text(cameras.replace("PINHOLE", "PINHOLE_X", 1))
    with pytest.raises(SceneError, match=r"cameras.txt: line 3 MODEL: unknown camera model 'PINHOLE_X'"):
        import_colmap(root, tmp_path / "out")
    (model / "cameras.txt").write_text(cameras.replace("PINHOLE", "SIMPLE_PINHOLE", 1))
    with pytest.raises(SceneError, match=r"line 3 PARAMS: SIMPLE_PINHOLE has 3 parameters, found 4"):
        import_colmap(root, tmp_path / "out")
    (model / "cameras.txt").write_text(cameras)
    points = (model / "points3D.txt").read_text().splitlines()
    points[5] = "7 1.0 2.0 oops 1 2 3 0.5"
    (model / "points3D.txt").write_text("\n".join(points) + "\n")
    with pytest.raises(SceneError, match=r"points3D.txt: line 6"):
        import_colmap(root, tmp_path / "out")


def test_binary_truncated_and_unknown_camera(tmp_path):
    root = sparse_project(tmp_path, write_colmap_binary)
    model = root / "sparse" / "0"
    data = (model / "images.bin").read_bytes()
    (model / "images.bin").write_bytes(data[:-5])
    with pytest.raises(SceneError, match=r"images.bin: image 4.POINTS2D: file ends"):
        import_colmap(root, tmp_path / "out")
    (model / "images.bin").write_bytes(data)
    cameras = (model / "cameras.bin").read_bytes()
    (model / "cameras.bin").write_bytes(cameras[:8] + struct.pack("<Ii", 1, 99) + cameras[16:])
    with pytest.raises(SceneError, match=r"cameras.bin: camera 1.MODEL: unknown camera model id 99"):
        import_colmap(root, tmp_path / "out")


def test_points_override_and_layout_errors(tmp_path):
    root = sparse_project(tmp_path)
    scene = synthetic_room()
    np.save(tmp_path / "pts.npy", scene.coord[:100].astype(np.float64))
    report = import_colmap(root, tmp_path / "out", points=tmp_path / "pts.npy")
    assert report.points == 100 and report.point_source == str(tmp_path / "pts.npy")
    (root / "sparse" / "1").mkdir()
    for f in (root / "sparse" / "0").iterdir():
        (root / "sparse" / "1" / f.name).write_bytes(f.read_bytes())
    with pytest.raises(DitrError, match=r"several models \['0', '1'\].*--model"):
        import_colmap(root, tmp_path / "out")
    report = import_colmap(root, tmp_path / "out", model=root / "sparse" / "1")
    assert report.source["model"] == str(root / "sparse" / "1")
    with pytest.raises(DitrError, match="no COLMAP model found"):
        import_colmap(tmp_path / "out", tmp_path / "out2")


def test_cli_prints_report(tmp_path, capsys):
    from ditr.cli import main

    root = sparse_project(tmp_path)
    assert main(["import", "colmap", str(root), str(tmp_path / "out"), "--scale", "0.5"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert '"dataset": "colmap"' in line and '"views": 4' in line and '"scale": 0.5' in line
