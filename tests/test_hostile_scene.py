"""Attack cases for the scene format: wrong poses, image modes, depth bit depths, label ranges and
paths out of the scene folder must be errors naming the file and the view, or be read correctly;
never a silently wrong scene."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ditr.errors import SceneError
from ditr.io.scannet import import_scannet
from ditr.scene import Scene
from conftest import wall_and_box_scene


def _edit_views(path: Path, edit) -> None:
    doc = json.loads((path / "views.json").read_text())
    edit(doc["views"][0])
    (path / "views.json").write_text(json.dumps(doc))


def _pose(view: dict, matrix: np.ndarray) -> None:
    pose = np.array(view["cam_to_world"])
    pose[:3, :3] = pose[:3, :3] @ matrix
    view["cam_to_world"] = pose.tolist()


# ------------------------------------------------------------------------------------------ poses
@pytest.mark.parametrize("matrix, problem", [
    (np.diag([1.1, 1.1, 1.1]), "not rigid"),  # scaled
    (np.array([[1, 0.2, 0], [0, 1, 0], [0, 0, 1]]), "not rigid"),  # sheared
    (np.diag([1.0, 1.0, -1.0]), "mirrored"),  # one axis flipped (OpenGL vs OpenCV half-done)
    (np.diag([1.0, -1.0, -1.0]) @ np.diag([-1.0, 1.0, 1.0]), "mirrored"),
])
def test_non_rigid_poses_name_the_file_and_view(wall_box_dir, matrix, problem):
    _edit_views(wall_box_dir, lambda v: _pose(v, matrix))
    with pytest.raises(SceneError) as info:
        Scene.load(wall_box_dir, check_images=False)
    message = str(info.value)
    assert "views.json" in message and "views[0] (cam0).cam_to_world" in message and problem in message


def test_nearly_rigid_poses_pass(wall_box_dir):
    """Poses written with 6 decimals (ScanNet) are orthonormal only to about 1e-6."""
    _edit_views(wall_box_dir, lambda v: v.update(cam_to_world=np.round(np.array(v["cam_to_world"]), 6).tolist()))
    Scene.load(wall_box_dir)


def test_save_refuses_what_load_would_refuse(tmp_path):
    scene = wall_and_box_scene()
    scene.views[0].cam_to_world = scene.views[0].cam_to_world @ np.diag([2.0, 2.0, 2.0, 1.0])
    with pytest.raises(SceneError, match=r"views\[0\] \(cam0\).cam_to_world: is not rigid"):
        scene.save(tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_views_whose_names_sanitise_alike_keep_their_own_images(tmp_path):
    scene = wall_and_box_scene()
    first = scene.views[0]
    other = Scene(coord=scene.coord, views=[first, first.__class__(**{**first.__dict__, "name": "cam/0"}),
                                            first.__class__(**{**first.__dict__, "name": "cam_0"})])
    other.views[1].image = np.full_like(first.image, 7)
    other.views[2].image = np.full_like(first.image, 200)
    loaded = Scene.load(other.save(tmp_path / "s", image_format="png"))
    assert len({v.image_path for v in loaded.views}) == 3
    assert loaded.views[1].read_image().max() == 7 and loaded.views[2].read_image().min() == 200


# ------------------------------------------------------------------------------------------ image modes
def _png(path: Path, array: np.ndarray, color_type: int) -> None:
    """A PNG written by hand (Pillow cannot write 16-bit RGB): 16-bit samples, big-endian."""
    h, w = array.shape[:2]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _replace_image(scene_dir: Path, array: np.ndarray, mode: str | None = None, *, png16: int | None = None) -> None:
    doc = json.loads((scene_dir / "views.json").read_text())
    target = scene_dir / "images" / "cam0.png"
    if png16 is not None:
        _png(target, array, png16)
    else:
        Image.fromarray(array, mode).save(target) if mode else Image.fromarray(array).save(target)
    doc["views"][0]["image"] = "images/cam0.png"
    (scene_dir / "views.json").write_text(json.dumps(doc))


def test_16_bit_greyscale_is_scaled_not_white(wall_box_dir):
    ramp = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    _replace_image(wall_box_dir, ramp)
    rgb = Scene.load(wall_box_dir).views[0].read_image()
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)
    expected = np.round(ramp / 257.0).astype(np.uint8)
    assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    assert (rgb == 255).mean() < 0.01  # Pillow's own conversion made 99.9 % of it white


def test_16_bit_png_written_by_hand_greyscale_and_rgb(wall_box_dir):
    grey = np.full((48, 64), 40000, np.uint16)
    _replace_image(wall_box_dir, grey, png16=0)
    assert np.all(Scene.load(wall_box_dir).views[0].read_image() == round(40000 / 257))
    colour = np.zeros((48, 64, 3), np.uint16)
    colour[..., 0], colour[..., 1], colour[..., 2] = 65535, 32896, 0
    _replace_image(wall_box_dir, colour, png16=2)
    rgb = Scene.load(wall_box_dir).views[0].read_image()
    assert np.abs(rgb[0, 0].astype(int) - [255, 128, 0]).max() <= 1


def test_8_bit_greyscale_and_palette_become_rgb(wall_box_dir):
    grey = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    _replace_image(wall_box_dir, grey)
    rgb = Scene.load(wall_box_dir).views[0].read_image()
    assert np.array_equal(rgb[..., 1], grey)
    Image.fromarray(np.stack([grey] * 3, -1)).convert("P").save(wall_box_dir / "images" / "cam0.png")
    assert Scene.load(wall_box_dir).views[0].read_image().shape == (48, 64, 3)


def test_float_images_are_refused(wall_box_dir):
    Image.fromarray(np.zeros((48, 64), np.float32)).save(wall_box_dir / "images" / "cam0.tiff")
    _edit_views(wall_box_dir, lambda v: v.update(image="images/cam0.tiff"))
    with pytest.raises(SceneError, match=r"cam0.tiff: views\[0\] \(cam0\).image: unsupported image mode F"):
        Scene.load(wall_box_dir)
    with pytest.raises(SceneError, match="unsupported image mode F"):
        Scene.load(wall_box_dir, check_images=False).views[0].read_image()


# ------------------------------------------------------------------------------------------ depth and labels
def test_8_bit_depth_png_is_an_error_naming_the_file(wall_box_dir):
    depth = Image.open(wall_box_dir / "depth" / "cam0.png")
    Image.fromarray((np.asarray(depth) // 16).astype(np.uint8)).save(wall_box_dir / "depth" / "cam0.png")
    with pytest.raises(SceneError) as info:
        Scene.load(wall_box_dir)
    assert "depth/cam0.png" in str(info.value) and "8-bit" in str(info.value) and "(cam0).depth" in str(info.value)
    with pytest.raises(SceneError, match=r"cam0.png: views\[cam0\].depth: is an 8-bit image"):  # the fast path too
        Scene.load(wall_box_dir, check_images=False).views[0].read_depth()


def test_colour_label_image_is_an_error(wall_box_dir):
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(wall_box_dir / "labels" / "cam0.png")
    with pytest.raises(SceneError, match=r"labels/cam0.png: views\[0\] \(cam0\).label: .*single-channel"):
        Scene.load(wall_box_dir)


def test_16_bit_labels_keep_ignore(wall_box_dir):
    labels = Scene.load(wall_box_dir).views[0].read_label()
    assert set(np.unique(labels)) <= {0, 1}
    raw = np.where(labels == 1, 65535, labels).astype(np.uint16)
    Image.fromarray(raw).save(wall_box_dir / "labels" / "cam0.png")
    assert set(np.unique(Scene.load(wall_box_dir).views[0].read_label())) == {-1, 0}


def test_label_ids_beyond_the_class_count(wall_box_dir):
    Scene.load(wall_box_dir, num_classes=2)
    with pytest.raises(SceneError) as info:
        Scene.load(wall_box_dir, num_classes=1)
    message = str(info.value)
    assert "segment.npy" in message and "class id 1" in message and "1 classes" in message
    # another label array than the scene's own choice
    np.save(wall_box_dir / "segment200.npy", np.full(Scene.load(wall_box_dir).num_points, 150, np.int64))
    Scene.load(wall_box_dir, num_classes=2, segment="segment")
    with pytest.raises(SceneError, match="segment200.npy: segment200: holds class id 150"):
        Scene.load(wall_box_dir, num_classes=20, segment="segment200")


# ------------------------------------------------------------------------------------------ paths
@pytest.mark.parametrize("rel", ["../outside.png", "images/../../outside.png", "ABSOLUTE", "..\\outside.png"])
def test_paths_out_of_the_scene_are_refused(wall_box_dir, rel):
    outside = wall_box_dir.parent / "outside.png"
    shutil.copyfile(wall_box_dir / "images" / "cam0.jpg", outside)
    rel = str(outside) if rel == "ABSOLUTE" else rel
    _edit_views(wall_box_dir, lambda v: v.update(image=rel))
    with pytest.raises(SceneError, match=r"views\[0\] \(cam0\).image: .*points outside the scene directory"):
        Scene.load(wall_box_dir)
    if "\\" not in rel:  # a shared image folder, on purpose
        scene = Scene.load(wall_box_dir, allow_external_files=True)
        assert scene.views[0].read_image().shape == (48, 64, 3)


def test_symlinked_folders_inside_the_scene_are_followed(wall_box_dir, tmp_path):
    shared = tmp_path / "shared_images"
    shutil.move(wall_box_dir / "images", shared)
    os.symlink(shared, wall_box_dir / "images")
    assert Scene.load(wall_box_dir).views[0].read_image().shape == (48, 64, 3)


# ------------------------------------------------------------------------------------------ importer
def test_scannet_import_refuses_scaled_poses(scannet_copy, tmp_path):
    pose_file = scannet_copy / "frames" / "scene0000_00" / "pose" / "00011.txt"
    pose = np.loadtxt(pose_file)
    pose[:3, :3] *= 1.05
    np.savetxt(pose_file, pose)
    with pytest.raises(SceneError, match=r"00011.txt: pose: is not rigid"):
        import_scannet(scannet_copy, tmp_path / "out")


def test_scannet_import_warns_about_scenes_whose_every_pose_is_invalid(scannet_copy, tmp_path):
    for pose_file in (scannet_copy / "frames" / "scene0000_00" / "pose").glob("*.txt"):
        pose_file.write_text("\n".join(["-inf -inf -inf -inf"] * 4))
    report = import_scannet(scannet_copy, tmp_path / "out", estimate_normals=True)  # no normals warning either
    assert report.scenes_without_frames == ["scene0000_00"] and report.skipped_invalid_pose == 3
    assert len(report.warnings) == 1 and "all 3 frames have invalid poses" in report.warnings[0]
    assert Scene.load(tmp_path / "out" / "scene0000_00").views == []
