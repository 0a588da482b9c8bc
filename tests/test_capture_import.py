"""``ditr import capture``: point file + images + poses file (text or JSON, any convention and direction)
must reproduce a synthetic room's correspondences; bad poses files fail naming file and field."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_colmap_import import SPLAT, assert_same_correspondences, rotation_to_quaternion, synthetic_room, write_images

from ditr.errors import SceneError
from ditr.io.capture import OPENGL_TO_OPENCV, import_capture
from ditr.io.ply import write_ply
from ditr.projection import project_scene
from ditr.scene import Scene

pytestmark = pytest.mark.usefixtures("single_thread")


def _k(v) -> list[float]:
    k = v.intrinsics
    return [k[0, 0], k[1, 1], k[0, 2], k[1, 2]]


@pytest.fixture
def capture(tmp_path):
    scene = synthetic_room()
    write_images(scene, tmp_path / "frames")
    write_ply(tmp_path / "scan.ply", scene.coord, scene.attributes["color"])
    return tmp_path, scene


def _fmt(values) -> str:
    return " ".join(repr(float(x)) for x in values)


def test_text_quaternions_world_to_cam(capture):
    """COLMAP-like lines: image fx fy cx cy qw qx qy qz tx ty tz, world->camera, OpenCV."""
    root, scene = capture
    lines = ["# image fx fy cx cy qw qx qy qz tx ty tz"]
    for v in scene.views:
        w2c = np.linalg.inv(v.cam_to_world)
        lines.append(f"{v.name}.png {_fmt(_k(v))} {_fmt(rotation_to_quaternion(w2c[:3, :3]))} {_fmt(w2c[:3, 3])}")
    (root / "poses.txt").write_text("\n".join(lines) + "\n")
    report = import_capture(root / "scan.ply", root / "frames", root / "poses.txt", root / "out",
                            pose_direction="world_to_cam")
    assert report.views == 4 and report.source["pose_direction"] == "world_to_cam"
    assert_same_correspondences(scene, Scene.load(root / "out"))


@pytest.mark.parametrize("rows", [3, 4])
def test_csv_matrices_with_header(capture, rows):
    root, scene = capture
    lines = ["image,fx,fy,cx,cy," + ",".join(f"m{i}" for i in range(4 * rows))]
    lines += [",".join([f"{v.name}.png", *map(repr, map(float, _k(v))),
                        *map(repr, v.cam_to_world[:rows].ravel().tolist())])
              for v in scene.views]
    (root / "poses.csv").write_text("\n".join(lines) + "\n")
    import_capture(root / "scan.ply", root / "frames", root / "poses.csv", root / "out")
    assert_same_correspondences(scene, Scene.load(root / "out"))


def test_json_opengl_with_declared_convention(capture):
    root, scene = capture
    v0 = scene.views[0]
    frames = [{"image": f"{v.name}.png", "matrix": (v.cam_to_world @ OPENGL_TO_OPENCV).tolist(),
               **({"intrinsics": v.intrinsics.tolist()} if i else {})} for i, v in enumerate(scene.views)]
    doc = {"convention": "opengl", "intrinsics": dict(zip(("fx", "fy", "cx", "cy"), _k(v0))), "frames": frames}
    (root / "poses.json").write_text(json.dumps(doc))
    report = import_capture(root / "scan.ply", root / "frames", root / "poses.json", root / "out")
    assert report.source["convention"] == "opengl"
    assert_same_correspondences(scene, Scene.load(root / "out"))
    # the flag overrides the file: read as OpenCV, the cameras look backwards and see other points
    import_capture(root / "scan.ply", root / "frames", root / "poses.json", root / "out2", convention="opencv")
    wrong = project_scene(Scene.load(root / "out2"), SPLAT)
    right = project_scene(Scene.load(root / "out"), SPLAT)
    assert int((wrong.in_frame & right.in_frame).sum()) < 0.1 * int(right.in_frame.sum())


def test_georeferenced_points_are_moved_near_the_origin(capture):
    """UTM-sized coordinates (500 km, 4000 km) would round to decimetres in float32: they are shifted."""
    root, scene = capture
    offset = np.array([500000.0, 4000000.0, 120.0])
    np.save(root / "utm.npy", scene.coord.astype(np.float64) + offset)
    frames = []
    for v in scene.views:
        pose = v.cam_to_world.copy()
        pose[:3, 3] += offset
        frames.append({"image": f"{v.name}.png", "matrix": pose.tolist(), "intrinsics": v.intrinsics.tolist()})
    (root / "poses.json").write_text(json.dumps({"frames": frames}))
    report = import_capture(root / "utm.npy", root / "frames", root / "poses.json", root / "out")
    imported = Scene.load(root / "out")
    shift = np.array(imported.meta["transform_from_source"])[:3, 3]
    assert np.abs(imported.coord).max() < 10 and "moved by" in report.notes[0]
    np.testing.assert_array_equal(shift, np.round(shift))
    np.testing.assert_allclose(imported.coord, scene.coord + offset + shift, atol=1e-5)
    assert_same_correspondences(scene, imported)


def test_missing_images_counted(capture):
    root, scene = capture
    frames = [{"image": f"{v.name}.png", "matrix": v.cam_to_world.tolist(), "intrinsics": v.intrinsics.tolist()}
              for v in scene.views] + [{"image": "absent.png", "matrix": np.eye(4).tolist(),
                                        "intrinsics": scene.views[0].intrinsics.tolist()}]
    (root / "poses.json").write_text(json.dumps(frames))  # a bare list of frames
    report = import_capture(root / "scan.ply", root / "frames", root / "poses.json", root / "out", frame_step=1)
    assert report.skipped_missing_image == 1 and report.views == 4


def test_poses_file_errors_name_file_and_field(capture):
    root, scene = capture
    v = scene.views[0]
    cases = {
        "short.txt": (f"{v.name}.png 1 2 3\n", r"short.txt: line 1: 3 numbers after the image name"),
        "nan.txt": (f"{v.name}.png {_fmt(_k(v))} 1 0 0 0 nan 0 0\n", r"nan.txt: line 1 translation: contains NaN"),
        "focal.txt": (f"{v.name}.png -5 5 1 1 1 0 0 0 0 0 0\n", r"focal.txt: line 1: focal lengths must be positive"),
        "scaled.json": (json.dumps({"intrinsics": v.intrinsics.tolist(), "frames": [
            {"image": "a.png", "matrix": np.diag([2.0, 2, 2, 1]).tolist()}]}),
            r"scaled.json: frames\[0\].matrix: rotation part is not orthonormal"),
        "noint.json": (json.dumps({"frames": [{"image": "a.png", "matrix": np.eye(4).tolist()}]}),
                       r"noint.json: frames\[0\].intrinsics: missing"),
        "nopose.json": (json.dumps({"intrinsics": v.intrinsics.tolist(), "frames": [{"image": "a.png"}]}),
                        r'nopose.json: frames\[0\]: needs "matrix"'),
    }
    for name, (text, message) in cases.items():
        (root / name).write_text(text)
        with pytest.raises(SceneError, match=message):
            import_capture(root / "scan.ply", root / "frames", root / name, root / "out")
    sheared = np.eye(4)
    sheared[0, 1] = 0.1
    (root / "shear.json").write_text(json.dumps({"intrinsics": v.intrinsics.tolist(),
                                                 "frames": [{"image": "a.png", "matrix": sheared.tolist()}]}))
    with pytest.raises(SceneError, match=r"frames\[0\].matrix: rotation part is not orthonormal"):
        import_capture(root / "scan.ply", root / "frames", root / "shear.json", root / "out")


def test_cli(capture, capsys):
    from ditr.cli import main

    root, scene = capture
    lines = [f"{v.name}.png {_fmt(_k(v))} {_fmt(v.cam_to_world.ravel())}" for v in scene.views]
    (root / "poses.txt").write_text("\n".join(lines) + "\n")
    assert main(["import", "capture", str(root / "scan.ply"), str(root / "frames"), str(root / "poses.txt"),
                 str(root / "out"), "--frame-step", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert '"dataset": "capture"' in line and '"views": 2' in line


def test_estimated_normals_and_the_splits_note(capture, capsys):
    """--normals estimate gives a point file without normals unit normals like the room's faces; a capture
    is one scene, so the import says it wrote no split lists and how to write them."""
    from ditr.cli import main

    root, scene = capture
    lines = [f"{v.name}.png {_fmt(_k(v))} " + " ".join(repr(float(x)) for x in v.cam_to_world[:3].ravel())
             for v in scene.views]
    (root / "poses.txt").write_text("\n".join(lines) + "\n")
    args = ["import", "capture", str(root / "scan.ply"), str(root / "frames"), str(root / "poses.txt")]
    assert main(args + [str(root / "plain")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["normals"] == "none" and "--normals estimate" in out
    assert "a capture is one scene" in err and "DATA/splits/train.txt" in err
    assert main(args + [str(root / "out"), "--normals", "estimate"]) == 0
    report = json.loads(capsys.readouterr().out)
    normal = Scene.load(root / "out").attributes["normal"]
    defined = np.abs(normal).sum(1) > 0
    assert report["normals"] == "estimated" and report["normals_undefined_points"] == int((~defined).sum())
    assert defined.mean() > 0.95 and np.allclose(np.linalg.norm(normal[defined], axis=1), 1, atol=1e-5)
    cos = np.einsum("ij,ij->i", normal[defined], scene.attributes["normal"][defined])
    # 4000 points in a furnished room are sparse (cubes of ~0.3 m): near the faces' normals, mostly the same side
    assert np.median(np.abs(cos)) > 0.85 and (cos > 0.5).mean() > 0.8
