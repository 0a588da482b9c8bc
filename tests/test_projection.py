"""Projection and visibility: geometry, occlusion (depth maps and splatting), real data (view fusion: test_lifting)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ditr.errors import DitrError
from ditr.projection import (
    ProjectionConfig,
    compute_correspondences,
    estimate_point_spacing,
    project_points,
    project_scene,
)
from ditr.scene import Scene
from conftest import look_at, wall_and_box_scene


def random_cameras(nv: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    w2c, k = [], []
    for _ in range(nv):
        pose = look_at(rng.uniform(-1, 1, 3),
                       rng.uniform(-0.2, 0.2, 3) + [0, 0, 0.0] + rng.normal(0, 0.01, 3) + [0, 0, 0])
        w2c.append(np.linalg.inv(pose))
        f = rng.uniform(100, 300)
        k.append([[f, 0, rng.uniform(60, 100)], [0, f * rng.uniform(0.9, 1.1), rng.uniform(40, 80)], [0, 0, 1]])
    return torch.tensor(np.array(w2c)), torch.tensor(np.array(k))


def test_project_points_matches_per_point_formula():
    pts = torch.randn(500, 3)
    w2c, k = random_cameras(4)
    uv, z = project_points(pts, w2c.float(), k.float())
    for v in range(4):
        cam = pts.double() @ w2c[v, :3, :3].T + w2c[v, :3, 3]
        u_ref = k[v, 0, 0] * cam[:, 0] / cam[:, 2] + k[v, 0, 2]
        v_ref = k[v, 1, 1] * cam[:, 1] / cam[:, 2] + k[v, 1, 2]
        ok = cam[:, 2].abs() > 0.1
        torch.testing.assert_close(z[v].double(), cam[:, 2], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(uv[v, ok, 0].double(), u_ref[ok], atol=1e-2, rtol=1e-4)
        torch.testing.assert_close(uv[v, ok, 1].double(), v_ref[ok], atol=1e-2, rtol=1e-4)


def test_pixel_convention_and_frame_tests():
    k = torch.tensor([[[100.0, 0, 50], [0, 100, 40], [0, 0, 1]]])
    w2c = torch.eye(4)[None]
    pts = torch.tensor([[0, 0, 2.0],      # principal point
                        [0.51, 0.2, 1.0],  # right and down: u = 101, v = 60 -> outside (width 100)
                        [0.49, 0.2, 1.0],  # u = 99, inside
                        [0, 0, -2.0],     # behind the camera
                        [0, 0, 10.0]])    # beyond max_depth
    corr = compute_correspondences(pts, w2c, k, torch.tensor([[80, 100]]), ProjectionConfig(max_depth=5.0))
    torch.testing.assert_close(corr.uv[0, 0], torch.tensor([50.0, 40.0]))
    assert corr.in_frame[0].tolist() == [True, False, True, False, False]
    near = compute_correspondences(pts, w2c, k, torch.tensor([[80, 100]]), ProjectionConfig(min_depth=1.5))
    assert near.in_frame[0].tolist() == [True, False, False, False, True]


@pytest.mark.parametrize("occlusion", ["depth", "splat"])
def test_occluder_hides_the_wall_behind_it(occlusion):
    scene = wall_and_box_scene()
    corr = project_scene(scene, ProjectionConfig(occlusion=occlusion))
    seg = torch.from_numpy(scene.attributes["segment"])
    inside = corr.in_frame[0]
    # Wall points whose ray passes well inside the box face (|x|, |z| < 0.4 at depth 2 -> 0.8 at 4).
    c = torch.from_numpy(scene.coord)
    behind = (seg == 0) & (c[:, 0].abs() < 0.8) & (c[:, 2].abs() < 0.8)
    clear = (seg == 0) & ((c[:, 0].abs() > 1.2) | (c[:, 2].abs() > 1.2)) & inside
    assert behind.sum() > 1000 and not corr.visible[0, behind].any()
    assert corr.visible[0, (seg == 1)].float().mean() > 0.99
    assert corr.visible[0, clear].float().mean() > 0.99
    # Visible points land on a pixel whose label is their own.
    label = torch.from_numpy(scene.views[0].label)
    uv = corr.uv[0, corr.visible[0]].long()
    agree = (label[uv[:, 1], uv[:, 0]] == seg[corr.visible[0]]).float().mean()
    assert agree > 0.99


def test_no_occlusion_keeps_everything_in_frame():
    scene = wall_and_box_scene()
    corr = project_scene(scene, ProjectionConfig(occlusion="none"))
    assert torch.equal(corr.visible, corr.in_frame)


def test_depth_tolerance_is_configurable():
    scene = wall_and_box_scene()
    scene.views[0].depth = scene.views[0].depth + 0.3  # a biased sensor
    strict = project_scene(scene, ProjectionConfig(occlusion="depth"))
    loose = project_scene(scene, ProjectionConfig(occlusion="depth", depth_tolerance=0.5))
    assert strict.visible.sum() == 0 and loose.visible.sum() > 0.5 * loose.in_frame.sum()


def test_depth_camera_with_its_own_intrinsics():
    scene = wall_and_box_scene()
    view = scene.views[0]
    full = project_scene(scene, ProjectionConfig(occlusion="depth"))
    # The same depth at half resolution, declared through depth_intrinsics.
    view.depth = view.depth[::2, ::2].copy()
    view.depth_intrinsics = view.intrinsics * np.array([[0.5], [0.5], [1.0]])
    view.depth_width, view.depth_height = view.width // 2, view.height // 2
    half = project_scene(scene, ProjectionConfig(occlusion="depth"))
    differ = full.visible[0] != half.visible[0]
    assert differ.float().mean() < 0.05
    # Only near the box's silhouette, where a half-resolution depth pixel straddles the edge.
    c = torch.from_numpy(scene.coord[differ.numpy()])
    ray = c[:, [0, 2]] / c[:, 1:2] * 2.0  # where the point's ray crosses the box plane
    assert ((ray.abs() - 0.5).abs().min(dim=1).values < 0.1).all()


def test_depth_occlusion_without_depth_maps_is_an_error(scannet_scene):
    with pytest.raises(DitrError, match="depth map"):
        project_scene(scannet_scene, ProjectionConfig(occlusion="depth"))


def test_far_from_origin_coordinates_project_the_same():
    scene = wall_and_box_scene()
    base = project_scene(scene, ProjectionConfig(occlusion="depth"))
    offset = np.array([431_250.0, 5_411_980.0, 120.0])  # UTM-like
    scene.coord = (scene.coord.astype(np.float64) + offset).astype(np.float32)
    scene.views[0].cam_to_world = scene.views[0].cam_to_world.copy()
    scene.views[0].cam_to_world[:3, 3] += offset
    moved = project_scene(scene, ProjectionConfig(occlusion="depth"))
    # float32 coordinates of this size are quantised to ~0.5 m: compare what survives quantisation
    assert (base.visible != moved.visible).float().mean() < 0.05


def test_chunking_does_not_change_results():
    scene = wall_and_box_scene()
    a = project_scene(scene, ProjectionConfig(occlusion="splat"))
    b = project_scene(scene, ProjectionConfig(occlusion="splat", chunk_size=1000))
    assert torch.equal(a.visible, b.visible) and torch.equal(a.uv, b.uv)


def test_point_spacing_estimate():
    spacing = 0.02
    scene = wall_and_box_scene(spacing=spacing)
    est = estimate_point_spacing(torch.from_numpy(scene.coord))
    assert 0.5 * spacing < est < 2 * spacing


def test_bad_projection_options():
    with pytest.raises(DitrError):
        ProjectionConfig(occlusion="magic")
    with pytest.raises(DitrError):
        ProjectionConfig(min_depth=2.0, max_depth=1.0)


# ------------------------------------------------------------------------- real ScanNet sample
def test_scannet_point_colours_match_image_pixels(scannet_scene):
    """Per frame: Pearson r between point colours and the pixels they land on >= 0.5, ~0 shuffled."""
    corr = project_scene(scannet_scene, ProjectionConfig())
    rng = np.random.default_rng(0)
    color = scannet_scene.attributes["color"].astype(np.float64)
    for i, view in enumerate(scannet_scene.views):
        vis = corr.visible[i].numpy()
        assert vis.sum() > 1000, view.name
        uv = corr.uv[i].numpy()[vis].astype(int)
        pixels = view.read_image()[uv[:, 1], uv[:, 0]].astype(np.float64)
        r = np.corrcoef(pixels.ravel(), color[vis].ravel())[0, 1]
        shuffled = np.corrcoef(pixels.ravel(), rng.permutation(color[vis]).ravel())[0, 1]
        assert r >= 0.5, (view.name, r)
        assert abs(shuffled) < 0.15, (view.name, shuffled)


def test_scannet_occlusion_improves_colour_agreement(scannet_scene):
    """Occlusion removes points hidden behind surfaces: the remaining ones agree better with the image."""
    rs = {}
    for mode in ("none", "splat"):
        corr = project_scene(scannet_scene, ProjectionConfig(occlusion=mode))
        color = scannet_scene.attributes["color"].astype(np.float64)
        vis = corr.visible[2].numpy()
        uv = corr.uv[2].numpy()[vis].astype(int)
        pixels = scannet_scene.views[2].read_image()[uv[:, 1], uv[:, 0]].astype(np.float64)
        rs[mode] = np.corrcoef(pixels.ravel(), color[vis].ravel())[0, 1]
    assert rs["splat"] > rs["none"] + 0.1, rs


# ------------------------------------------------------------------------- command line
def test_project_command_writes_the_contract(wall_box_dir, tmp_path, capsys):
    from ditr.cli import main

    out = tmp_path / "corr.npz"
    assert main(["project", str(wall_box_dir), "--out", str(out), "--render", str(tmp_path / "png")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    data = np.load(out)
    n = Scene.load(wall_box_dir).num_points
    assert data["uv"].shape == (1, n, 2) and data["uv"].dtype == np.float32
    assert data["visible"].shape == (1, n) and data["visible"].dtype == bool
    assert data["depth"].shape == (1, n) and data["depth"].dtype == np.float32
    assert list(data["views"]) == ["cam0"]
    assert summary["visible_point_views"] == int(data["visible"].sum())
    assert (tmp_path / "png" / "cam0.png").stat().st_size > 1000


def test_scene_no_camera_sees_is_reported(wall_box_dir, tmp_path, capsys):
    from ditr.cli import main

    doc = json.loads((wall_box_dir / "views.json").read_text())
    doc["views"][0]["cam_to_world"] = look_at([0, 0, 0], [0, -1, 0]).tolist()  # facing away
    (wall_box_dir / "views.json").write_text(json.dumps(doc))
    assert main(["project", str(wall_box_dir), "--out", str(tmp_path / "c.npz")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["seen_fraction"] == 0.0
    assert "no view sees any point" in captured.err
    assert main(["inspect", str(wall_box_dir)]) == 0
    assert "No camera sees any point" in capsys.readouterr().out


def test_stored_pixels_replace_the_pinhole_ones_and_keep_the_pose_depth():
    """A view's stored per-point pixels (the dataset's own projection) are its uv; the camera depth,
    the depth gate and in-front test still come from the pose; NaN rows are not in the frame."""
    scene = wall_and_box_scene()
    pinhole = project_scene(scene, ProjectionConfig(occlusion="none"))
    n = scene.num_points
    rng = np.random.default_rng(0)
    pixels = rng.uniform([0, 0], [64, 48], (n, 2)).astype(np.float32)  # unrelated to the pinhole pixels
    pixels[::4] = np.nan
    scene.views[0].pixels = pixels
    for chunk in (1 << 18, 1000):
        corr = project_scene(scene, ProjectionConfig(occlusion="none", chunk_size=chunk))
        has = ~np.isnan(pixels[:, 0])
        assert corr.in_frame[0].numpy().tolist() == has.tolist()
        np.testing.assert_array_equal(corr.uv[0].numpy()[has], pixels[has])
        assert torch.equal(corr.depth, pinhole.depth)
    gated = project_scene(scene, ProjectionConfig(occlusion="none", max_depth=3.0))  # the box (2 m), not the wall
    assert gated.in_frame[0].numpy().tolist() == (has & (pinhole.depth[0].numpy() < 3.0)).tolist()
    # The occlusion tests look up the depth map / splat at the stored pixels.
    scene.views[0].pixels = np.where(pinhole.in_frame[0, :, None].numpy(), pinhole.uv[0].numpy(), np.nan)
    assert torch.equal(project_scene(scene, ProjectionConfig(occlusion="depth")).visible,
                       project_scene(wall_and_box_scene(), ProjectionConfig(occlusion="depth")).visible)
    with pytest.raises(DitrError, match="stored pixels have shape"):
        compute_correspondences(torch.from_numpy(scene.coord), torch.eye(4)[None], torch.eye(3)[None],
                                torch.tensor([[48, 64]]), pixels=[torch.zeros(3, 2)])
