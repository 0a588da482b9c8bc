"""ScanNet importer: the real sample, invalid poses, axis alignment, depth frames, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ditr.cli import main
from ditr.errors import DitrError, SceneError
from ditr.io.scannet import SCANNET20_CLASSES, import_scannet, read_matrix
from ditr.projection import ProjectionConfig, project_scene
from ditr.scene import Scene


def test_real_sample_imports(scannet_scene):
    assert scannet_scene.num_points == 81369
    assert [v.name for v in scannet_scene.views] == ["00000", "00011", "00102"]
    assert all((v.width, v.height) == (1296, 968) for v in scannet_scene.views)
    assert scannet_scene.meta["class_names"] == SCANNET20_CLASSES
    assert scannet_scene.segment() is scannet_scene.attributes["segment20"]
    assert set(scannet_scene.attributes) == {"color", "segment20", "instance"}


def test_cli_import_prints_a_report(scannet_copy, tmp_path, capsys):
    assert main(["import", "scannet", str(scannet_copy), str(tmp_path / "out"), "--frame-step", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scenes"] == ["scene0000_00"] and report["frames"] == 2
    assert [v.name for v in Scene.load(tmp_path / "out" / "scene0000_00").views] == ["00000", "00102"]


def test_invalid_poses_are_skipped_and_counted(scannet_copy, tmp_path):
    pose = scannet_copy / "frames" / "scene0000_00" / "pose" / "00011.txt"
    pose.write_text("\n".join(["-inf -inf -inf -inf"] * 4))
    report = import_scannet(scannet_copy, tmp_path / "out")
    assert report.skipped_invalid_pose == 1 and report.frames == 2


def test_missing_pose_is_an_error(scannet_copy, tmp_path):
    (scannet_copy / "frames" / "scene0000_00" / "pose" / "00011.txt").unlink()
    with pytest.raises(SceneError, match="00011.txt"):
        import_scannet(scannet_copy, tmp_path / "out")


def test_axis_aligned_points_get_aligned_poses(scannet_copy, tmp_path):
    import_scannet(scannet_copy, tmp_path / "raw")
    raw = Scene.load(tmp_path / "raw" / "scene0000_00")
    align = read_matrix(scannet_copy / "frames" / "scene0000_00" / "axis_align_matrix.txt")
    coord = np.load(scannet_copy / "scene0000_00" / "coord.npy")
    aligned = coord @ align[:3, :3].T.astype(np.float32) + align[:3, 3].astype(np.float32)
    np.save(scannet_copy / "scene0000_00" / "coord.npy", aligned.astype(np.float32))
    import_scannet(scannet_copy, tmp_path / "aligned", axis_aligned=True)
    moved = Scene.load(tmp_path / "aligned" / "scene0000_00")
    a = project_scene(raw, ProjectionConfig(occlusion="none"))
    b = project_scene(moved, ProjectionConfig(occlusion="none"))
    assert torch.equal(a.in_frame, b.in_frame) or (a.in_frame != b.in_frame).float().mean() < 1e-4
    torch.testing.assert_close(a.uv[a.in_frame], b.uv[a.in_frame], atol=0.05, rtol=0)


def test_depth_frames_are_referenced_with_their_intrinsics(scannet_copy, tmp_path):
    frames = scannet_copy / "frames" / "scene0000_00"
    (frames / "depth").mkdir()
    for name in ("00000", "00011", "00102"):
        Image.fromarray(np.full((480, 640), 2000, np.uint16)).save(frames / "depth" / f"{name}.png")
    k = read_matrix(frames / "intrinsic" / "intrinsic_color.txt")
    k[:2] *= 0.5
    np.savetxt(frames / "intrinsic" / "intrinsic_depth.txt", k)
    import_scannet(scannet_copy, tmp_path / "out")
    scene = Scene.load(tmp_path / "out" / "scene0000_00")
    view = scene.views[0]
    assert view.has_depth and (view.depth_width, view.depth_height) == (640, 480)
    assert np.allclose(view.read_depth(), 2.0)
    corr = project_scene(scene, ProjectionConfig(occlusion="depth"))
    assert corr.visible.any()  # points about 2 m away pass the depth test
    assert (corr.depth[corr.visible] - 2.0).abs().max() <= 0.2 + 1e-5


def test_source_without_scenes_is_an_error(tmp_path):
    with pytest.raises(DitrError, match="no scene directories"):
        import_scannet(tmp_path, tmp_path / "out")
    with pytest.raises(DitrError, match="does not exist"):
        import_scannet(tmp_path / "nope", tmp_path / "out")


def test_scene_without_frames_is_reported(scannet_copy, tmp_path):
    shutil.rmtree(scannet_copy / "frames")
    report = import_scannet(scannet_copy, tmp_path / "out")
    assert report.scenes_without_frames == ["scene0000_00"]
    assert Scene.load(tmp_path / "out" / "scene0000_00").views == []
