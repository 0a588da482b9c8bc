"""Synthetic streets: determinism, the scene format, the LiDAR's rings, and ground-truth visibility."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from ditr import cli
from ditr.io.synthetic import room_seed
from ditr.io.synthetic.geometry import Builder
from ditr.io.synthetic.lidar import LidarConfig, velodyne_elevations
from ditr.io.synthetic.outdoor import (CAMERA_RIG, CLASS_NAMES, GT_FILE, LIDAR_FILE, generate_street,
                                      render_street_views, write_streets)
from ditr.io.synthetic.render import Camera, look_at, true_visibility
from ditr.io.synthetic.textures import Material
from ditr.scene import Scene

#: Tiny streets: 5-degree azimuth steps and thumbnail images keep a street well under a second.
TINY = dict(lidar=LidarConfig.velodyne(32, azimuth_step_deg=5.0), width=48, height=27)


def _pixels(scene: Scene, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent pinhole projection of the points into view ``i``: pixel row and column (floor)."""
    view = scene.views[i]
    world_to_cam = np.linalg.inv(view.cam_to_world)
    q = (scene.coord.astype(np.float64) @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]) @ view.intrinsics.T
    z = np.where(q[:, 2] > 1e-6, q[:, 2], 1.0)
    return np.floor(q[:, 1] / z).astype(int), np.floor(q[:, 0] / z).astype(int)


def test_deterministic_per_seed() -> None:
    a, b, c = generate_street(3, **TINY), generate_street(3, **TINY), generate_street(4, **TINY)
    np.testing.assert_array_equal(a.scene.coord, b.scene.coord)
    for name in a.scene.attributes:
        np.testing.assert_array_equal(a.scene.attributes[name], b.scene.attributes[name])
    for va, vb in zip(a.scene.views, b.scene.views):
        np.testing.assert_array_equal(va.image, vb.image)
        np.testing.assert_array_equal(va.label, vb.label)
        np.testing.assert_array_equal(va.cam_to_world, vb.cam_to_world)
    np.testing.assert_array_equal(a.visible, b.visible)
    np.testing.assert_array_equal(a.surface, b.surface)
    assert a.scene.coord.shape != c.scene.coord.shape or not np.array_equal(a.scene.coord, c.scene.coord)


def test_views_rendered_without_a_scan_are_the_streets_views() -> None:
    """The teacher's street images (render_street_views) are exactly what generate_street renders."""
    street = generate_street(3, **TINY)
    images, labels = render_street_views(3, width=48, height=27, views=4)
    assert images.shape == (4, 27, 48, 3) and labels.shape == (4, 27, 48)
    for view, image, label in zip(street.scene.views, images, labels):
        np.testing.assert_array_equal(view.image, image)
        np.testing.assert_array_equal(view.label, label)
    with pytest.raises(ValueError, match="views must be 1-6"):
        render_street_views(3, width=48, height=27, views=7)


def test_written_street_loads_with_its_ground_truth(tmp_path) -> None:
    [path] = write_streets(tmp_path / "streets", 1, 5, **TINY)
    street = generate_street(room_seed(5, 0), **TINY)
    scene = Scene.load(path, num_classes=len(CLASS_NAMES))
    n = scene.num_points
    np.testing.assert_array_equal(scene.coord, street.scene.coord)
    assert set(scene.attributes) == {"strength", "segment", "instance"}  # what a LiDAR dataset has
    strength = scene.attributes["strength"]
    assert strength.dtype == np.float32 and strength.min() >= 0 and strength.max() <= 1
    assert [v.name for v in scene.views] == [name for name, _, _ in CAMERA_RIG]
    for view, original in zip(scene.views, street.scene.views):
        assert not view.has_depth and (view.width, view.height) == (48, 27)
        np.testing.assert_array_equal(view.read_image(), original.image)
        np.testing.assert_array_equal(view.read_label(), original.label)
    meta = scene.meta
    assert meta["name"] == "street_0000" and meta["class_names"] == CLASS_NAMES and meta["segment"] == "segment"
    assert meta["lidar"]["beams"] == 32 and len(meta["lidar"]["elevations_deg"]) == 32
    assert meta["visibility_gt"] == {"file": GT_FILE, "tolerance": 0.01}
    gt = np.load(path / GT_FILE)
    assert gt["visible"].shape == gt["in_frame"].shape == (6, n) and gt["visible"].dtype == bool
    assert not (gt["visible"] & ~gt["in_frame"]).any()
    assert gt["views"].tolist() == [v.name for v in scene.views] and gt["surface"].shape == (n, 3)
    # range noise moves a point along its beam, a few centimetres off the surface
    assert np.abs(np.linalg.norm(gt["surface"] - scene.coord, axis=1)).max() < 0.2
    rings = np.load(path / LIDAR_FILE)
    assert rings["ring"].shape == rings["column"].shape == (n,)


@pytest.mark.parametrize("beams", [32, 64])
def test_lidar_rings_follow_the_beam_layout(beams: int) -> None:
    config = LidarConfig.velodyne(beams, azimuth_step_deg=1.0, range_noise=0.05)
    street = generate_street(1, lidar=config, width=16, height=9)
    local = street.scene.coord.astype(np.float64)  # the scene is in the LiDAR's frame
    elevation = np.degrees(np.arcsin(local[:, 2] / np.linalg.norm(local, axis=1)))
    expected = np.asarray(config.elevations_deg)[street.ring]
    np.testing.assert_allclose(elevation, expected, atol=1e-3)  # noise moves points along their beam only
    azimuth = np.degrees(np.arctan2(local[:, 1], local[:, 0])) % 360
    step = np.abs((azimuth - street.column * config.azimuth_step_deg + 180) % 360 - 180)
    assert step.max() < 1e-3
    assert config.elevations_deg == velodyne_elevations(beams)
    span = (-30.67, 10.67) if beams == 32 else (-24.9, 2.0)
    assert (min(config.elevations_deg), max(config.elevations_deg)) == span
    assert len(np.unique(street.ring * config.columns + street.column)) == street.scene.num_points  # one return per ray
    assert len(np.unique(street.ring)) >= beams - 2  # nearly every beam hits something in a street
    assert np.linalg.norm(street.surface, axis=1).max() <= config.max_range
    # the road lies 1.8 m below the sensor
    road = street.scene.attributes["segment"] == CLASS_NAMES.index("road")
    np.testing.assert_allclose(street.surface[road, 2], -street.scene.meta["lidar"]["height"], atol=1e-9)


def test_cameras_stand_apart_from_the_lidar() -> None:
    street = generate_street(2, **TINY)
    offsets = [np.linalg.norm(v.cam_to_world[:3, 3]) for v in street.scene.views]  # the LiDAR is the origin
    assert len(offsets) == 6 and all(0.5 <= d <= 1.5 for d in offsets)


def _box_scene(occluder: bool) -> tuple:
    """A target box at x = 8..9 and, optionally, a wall at x = 4..4.2 between it and a camera at x = 1."""
    size = np.full(3, 10.0)
    b = Builder(size, np.random.default_rng(0))
    record = dict(cls=0, instance=0, material=Material.PLASTER, front=np.array([1.0, 0.0, 0.0]),
                  color_a=np.full(3, 0.5), color_b=np.full(3, 0.5), solid=True)
    b.box(np.array([8.0, 4.0, 0.5]), np.array([9.0, 6.0, 2.5]), **record)
    if occluder:
        b.box(np.array([4.0, 4.5, 1.0]), np.array([4.2, 5.5, 2.0]), **record)
    geometry = b.finish()
    k = np.array([[50.0, 0.0, 50.0], [0.0, 50.0, 50.0], [0.0, 0.0, 1.0]])
    camera = Camera(k, look_at(np.array([1.0, 5.0, 1.5]), np.array([9.0, 5.0, 1.5])), 100, 100)
    return geometry, trimesh.Trimesh(geometry.vertices, geometry.faces, process=False), [camera]


def test_ground_truth_visibility_on_a_hand_built_scene() -> None:
    # on the target's front face behind the wall; on the wall's front face; 5 mm inside the target's face
    # (within the 1 cm tolerance); behind the camera
    points = np.array([[8.0, 5.0, 1.5], [4.0, 5.0, 1.5], [8.005, 5.0, 1.5], [0.0, 5.0, 1.5]])
    geometry, mesh, cameras = _box_scene(occluder=True)
    in_frame, visible = true_visibility(geometry, mesh, cameras, points, points, tolerance=0.01)
    assert in_frame.tolist() == [[True, True, True, False]]
    assert visible.tolist() == [[False, True, False, False]]
    geometry, mesh, cameras = _box_scene(occluder=False)
    in_frame, visible = true_visibility(geometry, mesh, cameras, points, points, tolerance=0.01)
    assert visible.tolist() == [[True, True, True, False]]  # nothing on the way: [1] floats in free space
    _, strict = true_visibility(geometry, mesh, cameras, points, points, tolerance=0.001)
    assert strict.tolist() == [[True, True, False, False]]  # 5 mm behind the face it sees


def test_visible_points_land_on_their_own_label() -> None:
    """Points the ground truth calls visible land on pixels of their own class (>= 99 %), and the
    occlusions it finds are real: many hidden points lie behind something of another class."""
    street = generate_street(0, lidar=LidarConfig.velodyne(32, azimuth_step_deg=0.4), width=640, height=360)
    scene = street.scene
    segment = scene.attributes["segment"]
    agree = total = hidden_by_other = 0
    for i, view in enumerate(scene.views):
        row, col = _pixels(scene, i)
        seen = street.visible[i]
        agree += int((view.label[row[seen], col[seen]] == segment[seen]).sum())
        total += int(seen.sum())
        hidden = street.in_frame[i] & ~seen
        hidden_by_other += int((view.label[row[hidden], col[hidden]] != segment[hidden]).sum())
    assert total > 10000
    assert agree / total >= 0.99, f"{agree / total:.4f}"
    assert hidden_by_other > 500


def test_every_class_is_scanned() -> None:
    lidar = LidarConfig.velodyne(64, azimuth_step_deg=0.5)
    seen = set()
    for seed in range(3):
        seen |= set(generate_street(seed, lidar=lidar, width=16, height=9).scene.attributes["segment"].tolist())
    assert seen == set(range(len(CLASS_NAMES)))


def test_cylinders_along_x_face_outwards() -> None:
    b = Builder(np.full(3, 10.0), np.random.default_rng(0))
    b.cylinder(np.array([1.0, 2.0, 3.0]), np.array([1.2, 2.6, 3.6]), axis=0, cls=0, instance=0,
               material=Material.TYRE, front=np.array([1.0, 0.0, 0.0]), color_a=np.zeros(3), color_b=np.zeros(3),
               solid=True)
    g = b.finish()
    centroids = g.vertices[g.faces].mean(axis=1)
    outward = centroids - np.array([1.1, 2.3, 3.3])
    assert (np.einsum("ij,ij->i", g.face_normals, outward) > 0).all()
    np.testing.assert_allclose(g.vertices.min(axis=0), [1.0, 2.0, 3.0], atol=1e-3)
    np.testing.assert_allclose(g.vertices.max(axis=0), [1.2, 2.6, 3.6], atol=1e-3)


def test_cli_synth_outdoor(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["synth", str(out), "--outdoor", "--scenes", "1", "--seed", "2", "--width", "32", "--height", "18",
            "--azimuth-step", "4", "--beams", "64"]
    assert cli.main(args) == 0
    assert "street_0000" in capsys.readouterr().out
    scene = Scene.load(out / "street_0000")
    assert scene.meta["lidar"]["beams"] == 64 and scene.meta["lidar"]["azimuth_step_deg"] == 4.0
    assert len(scene.views) == 6 and scene.views[0].width == 32 and (out / "street_0000" / GT_FILE).is_file()
    assert cli.main(["synth", str(out), "--outdoor", "--points", "100"]) == 2
    assert "--points" in capsys.readouterr().err
    assert cli.main(["synth", str(out), "--beams", "64"]) == 2
    assert "--outdoor" in capsys.readouterr().err
