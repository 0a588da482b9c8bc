"""Scene format v1: round trip, and a clear error naming file and field for every kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ditr.cli import main
from ditr.errors import SceneError
from ditr.scene import Scene
from conftest import wall_and_box_scene


def test_round_trip_keeps_everything(tmp_path):
    scene = wall_and_box_scene()
    path = scene.save(tmp_path / "s")
    loaded = Scene.load(path)
    np.testing.assert_array_equal(loaded.coord, scene.coord)
    np.testing.assert_array_equal(loaded.attributes["segment"], scene.attributes["segment"])
    np.testing.assert_array_equal(loaded.attributes["color"], scene.attributes["color"])
    assert loaded.meta["class_names"] == ["wall", "box"]
    (v0,), (v1,) = scene.views, loaded.views
    np.testing.assert_allclose(v1.cam_to_world, v0.cam_to_world)
    np.testing.assert_allclose(v1.intrinsics, v0.intrinsics)
    np.testing.assert_array_equal(v1.read_label(), v0.label)
    np.testing.assert_allclose(v1.read_depth(), v0.depth, atol=1e-3)  # uint16 millimetres
    assert v1.read_image().shape == (v0.height, v0.width, 3)
    assert loaded.segment() is loaded.attributes["segment"]


def test_save_replaces_atomically_and_survives_interruption(tmp_path, monkeypatch):
    path = wall_and_box_scene().save(tmp_path / "s")
    smaller = Scene(coord=np.zeros((5, 3), np.float32))
    import ditr.scene as scene_module

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scene_module, "atomic_write_json", boom)
    smaller.meta = {"name": "x"}
    with pytest.raises(KeyboardInterrupt):
        smaller.save(path)
    assert Scene.load(path).num_points > 5  # the old scene is intact
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    monkeypatch.undo()
    smaller.save(path)
    assert Scene.load(path).num_points == 5
    assert not (path / "views.json").exists()


def _expect(path: Path, file_part: str, field_part: str | None):
    with pytest.raises(SceneError) as info:
        Scene.load(path)
    message = str(info.value)
    assert file_part in message, message
    if field_part:
        assert field_part in message, message
    return message


def _edit_views(path: Path, edit) -> None:
    doc = json.loads((path / "views.json").read_text())
    edit(doc)
    (path / "views.json").write_text(json.dumps(doc))


def test_missing_directory_and_coord(tmp_path, wall_box_dir):
    _expect(tmp_path / "nope", "nope", "does not exist")
    (wall_box_dir / "coord.npy").unlink()
    _expect(wall_box_dir, "coord.npy", "missing")


@pytest.mark.parametrize("coord, problem", [
    (np.zeros((4, 2), np.float32), "shape"),
    (np.zeros((4, 3), np.int32), "dtype"),
    (np.array([[0, 0, 0], [np.nan, 1, 1]], np.float32), "NaN"),
    (np.array([[0, 0, 0], [np.inf, 1, 1]], np.float32), "infinite"),
    (np.zeros((0, 3), np.float32), "no points"),
])
def test_bad_coord(tmp_path, coord, problem):
    (tmp_path / "s").mkdir()
    np.save(tmp_path / "s" / "coord.npy", coord)
    msg = _expect(tmp_path / "s", "coord.npy", "coord")
    assert problem in msg


@pytest.mark.parametrize("name, array, problem", [
    ("color", np.zeros((4, 3), np.float32), "uint8"),
    ("color", np.zeros((4, 4), np.uint8), "shape"),
    ("segment20", np.zeros(3, np.int64), "rows"),
    ("segment", np.zeros(4, np.float32), "integer"),
    ("segment", np.full(4, -5), "-5"),
    ("normal", np.full((4, 3), np.nan, np.float32), "NaN"),
    ("strength", np.zeros((4, 2), np.float32), "shape"),
])
def test_bad_attributes(tmp_path, name, array, problem):
    (tmp_path / "s").mkdir()
    np.save(tmp_path / "s" / "coord.npy", np.zeros((4, 3), np.float32))
    np.save(tmp_path / "s" / f"{name}.npy", array)
    msg = _expect(tmp_path / "s", f"{name}.npy", name)
    assert problem in msg


def test_corrupt_npy(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "coord.npy").write_bytes(b"not a numpy file")
    _expect(tmp_path / "s", "coord.npy", "cannot be read")


@pytest.mark.parametrize("edit, field_part, problem", [
    (lambda d: d.update(format="other"), "format", "ditr.views"),
    (lambda d: d.update(version=7), "version", "unsupported"),
    (lambda d: d["views"][0].pop("intrinsics"), "intrinsics", "missing"),
    (lambda d: d["views"][0].update(cam_to_world=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]),
     "cam_to_world", "not invertible"),
    (lambda d: d["views"][0]["cam_to_world"][0].__setitem__(3, float("nan")), "cam_to_world", "NaN"),
    (lambda d: d["views"][0]["cam_to_world"].__setitem__(3, [0, 0, 1, 1]), "cam_to_world", "last row"),
    (lambda d: d["views"][0]["intrinsics"][0].__setitem__(0, 0.0), "intrinsics", "focal"),
    (lambda d: d["views"][0].update(intrinsics=[[1, 0], [0, 1]]), "intrinsics", "3x3"),
    (lambda d: d["views"][0].update(width=-3), "width", "positive integer"),
    (lambda d: d["views"][0].update(width=65), "image", "64x48"),
    (lambda d: d["views"][0].update(image="images/missing.jpg"), "image", "not found"),
    (lambda d: d["views"][0].update(depth="depth/missing.png"), "depth", "not found"),
    (lambda d: d["views"][0].update(depth_scale=0), "depth_scale", "positive"),
    (lambda d: d["views"].append(dict(d["views"][0])), "name", "duplicate"),
])
def test_bad_views(wall_box_dir, edit, field_part, problem):
    _edit_views(wall_box_dir, edit)
    msg = _expect(wall_box_dir, "views.json" if field_part != "image" or "not found" in problem else "", field_part)
    assert problem in msg


def test_views_json_not_json(wall_box_dir):
    (wall_box_dir / "views.json").write_text("{ nope")
    _expect(wall_box_dir, "views.json", "not valid JSON")


def test_image_and_depth_of_wrong_size(wall_box_dir):
    Image.new("RGB", (10, 10)).save(wall_box_dir / "images" / "cam0.jpg")
    msg = _expect(wall_box_dir, "cam0.jpg", "image")
    assert "10x10" in msg and "64x48" in msg
    wall_and_box_scene().save(wall_box_dir)
    Image.fromarray(np.zeros((5, 5), np.uint16)).save(wall_box_dir / "depth" / "cam0.png")
    _expect(wall_box_dir, "cam0.png", "depth")


def test_meta_validation(wall_box_dir):
    (wall_box_dir / "meta.json").write_text(json.dumps({"class_names": "wall"}))
    _expect(wall_box_dir, "meta.json", "class_names")


def test_cli_reports_bad_input_in_one_line(wall_box_dir, tmp_path, capsys):
    np.save(wall_box_dir / "coord.npy", np.full((3, 3), np.nan, np.float32))
    assert main(["inspect", str(wall_box_dir)]) == 2
    err = capsys.readouterr().err
    assert "coord.npy" in err and "NaN" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_three_d_only_scene(tmp_path):
    path = Scene(coord=np.random.rand(10, 3).astype(np.float32)).save(tmp_path / "s")
    scene = Scene.load(path)
    assert scene.views == [] and scene.segment() is None


def test_copying_a_loaded_scene_copies_its_files(wall_box_dir, tmp_path):
    scene = Scene.load(wall_box_dir)
    copy = scene.save(tmp_path / "copy")
    again = Scene.load(copy)
    assert again.views[0].image_path.parent.parent == copy
    np.testing.assert_array_equal(again.views[0].read_image(), scene.views[0].read_image())
    shutil.rmtree(wall_box_dir)
    assert Scene.load(copy).views[0].read_label() is not None


def test_truncated_image_is_reported_when_decoded(wall_box_dir):
    image = wall_box_dir / "images" / "cam0.jpg"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    with pytest.raises(SceneError) as info:
        Scene.load(wall_box_dir, check_images=False).views[0].read_image()
    assert "cam0.jpg" in str(info.value) and "cannot be decoded" in str(info.value)


def test_saved_scene_has_ordinary_permissions(tmp_path):
    """Atomic writes go through private temp files; what lands must be readable like a plain write."""
    import os
    import stat

    from ditr.fileio import DIR_MODE, FILE_MODE

    path = wall_and_box_scene().save(tmp_path / "shared_scene")
    assert stat.S_IMODE(os.stat(path).st_mode) == DIR_MODE
    assert stat.S_IMODE(os.stat(path / "coord.npy").st_mode) == FILE_MODE
    assert stat.S_IMODE(os.stat(path / "views.json").st_mode) == FILE_MODE


def _with_pixels(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """The wall-and-box scene whose view carries stored pixels: the pinhole ones shifted by (2.5, -1.5)
    px, NaN for every third point (not projected) and for those the shift moves out of the image."""
    from ditr.projection import ProjectionConfig, project_scene

    scene = wall_and_box_scene()
    corr = project_scene(scene, ProjectionConfig(occlusion="none"))
    pixels = np.where(corr.in_frame[0, :, None].numpy(), corr.uv[0].numpy() + [2.5, -1.5], np.nan).astype(np.float32)
    pixels[::3] = np.nan
    view = scene.views[0]
    outside = (pixels[:, 0] >= view.width) | (pixels[:, 1] < 0)
    pixels[outside] = np.nan
    view.pixels = pixels
    return scene.save(tmp_path / "s"), pixels


def test_stored_pixels_round_trip_with_the_minor_version(tmp_path):
    path, pixels = _with_pixels(tmp_path)
    doc = json.loads((path / "views.json").read_text())
    assert (doc["version"], doc["minor"]) == (1, 2) and doc["views"][0]["pixels"] == "pixels/cam0.npy"
    loaded = Scene.load(path).views[0].pixels
    assert loaded.dtype == np.float32 and np.isnan(loaded).any()
    np.testing.assert_array_equal(loaded, pixels)
    # A scene without pixels (and a views.json of version 1.0, without "minor") loads as before.
    plain = wall_and_box_scene().save(tmp_path / "plain")
    _edit_views(plain, lambda d: d.pop("minor"))
    assert Scene.load(plain).views[0].pixels is None
    _edit_views(plain, lambda d: d.update(minor=-1))
    _expect(plain, "views.json", "minor")


@pytest.mark.parametrize("array, problem", [
    (lambda p: p[:-1], "rows, expected"),
    (lambda p: p[:, :1], "shape"),
    (lambda p: np.nan_to_num(p).astype(np.int64), "dtype int64"),
    (lambda p: np.where(np.arange(len(p))[:, None] == 3, [np.nan, 5.0], p), "one NaN coordinate (first: row 3)"),
    (lambda p: np.where(np.arange(len(p))[:, None] == 7, np.inf, p), "infinite (first: row 7)"),
    (lambda p: np.where(np.arange(len(p))[:, None] == 1, [64.0, 10.0], p), "outside the 64x48 image (first: row 1"),
    (lambda p: np.where(np.arange(len(p))[:, None] == 2, [5.0, -0.01], p), "outside the 64x48 image (first: row 2"),
])
def test_bad_stored_pixels_name_the_file_and_field(tmp_path, array, problem):
    path, pixels = _with_pixels(tmp_path)
    np.save(path / "pixels" / "cam0.npy", array(pixels))
    with pytest.raises(SceneError) as info:
        Scene.load(path)
    assert info.value.file == path / "pixels" / "cam0.npy" and info.value.field == "views[0] (cam0).pixels"
    assert problem in info.value.problem
    # What load refuses, save refuses too.
    scene = wall_and_box_scene()
    scene.views[0].pixels = array(pixels)
    with pytest.raises(SceneError, match=r"views\[0\] \(cam0\)\.pixels"):
        scene.save(tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_stored_pixels_path_must_be_an_npy_file_inside_the_scene(tmp_path):
    path, _ = _with_pixels(tmp_path)
    for rel, problem in (("pixels/missing.npy", "file not found"), ("../pixels.npy", "outside the scene"),
                         ("images/cam0.jpg", "a .npy array")):
        _edit_views(path, lambda d, rel=rel: d["views"][0].update(pixels=rel))
        assert problem in _expect(path, "views.json", "views[0] (cam0).pixels")
    (path / "pixels" / "cam0.npy").write_bytes(b"not a numpy file")
    _edit_views(path, lambda d: d["views"][0].update(pixels="pixels/cam0.npy"))
    _expect(path, "cam0.npy", "cannot be read")
