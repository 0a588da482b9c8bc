"""Synthetic rooms: determinism, format, metric depth, and agreement between points and rendered labels."""

from __future__ import annotations

import numpy as np
import pytest

from ditr import cli
from ditr.io.synthetic import CLASS_NAMES, generate_room, room_seed, write_rooms
from ditr.io.synthetic.layout import build_room
from ditr.io.synthetic.render import place_cameras, render
from ditr.scene import Scene

SMALL = dict(num_points=3000, num_views=2, width=64, height=48)
FURNITURE = [CLASS_NAMES.index(c) for c in ("table", "chair", "bed", "sofa", "cabinet", "shelf", "lamp")]


@pytest.fixture(scope="module")
def rooms() -> list[Scene]:
    """Three full-size rooms (20k points, 8 views of 320x240), shared by the checks below."""
    return [generate_room(seed) for seed in range(3)]


def _project(scene: Scene, view) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Independent pinhole projection: pixel row/col, camera z and in-image mask of every point."""
    w2c = np.linalg.inv(view.cam_to_world)
    q = scene.coord.astype(np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = q[:, 2]
    safe = np.where(z > 1e-6, z, 1.0)
    k = view.intrinsics
    u, v = k[0, 0] * q[:, 0] / safe + k[0, 2], k[1, 1] * q[:, 1] / safe + k[1, 2]
    inside = (z > 1e-6) & (u >= 0) & (u < view.width) & (v >= 0) & (v < view.height)
    col = np.clip(np.floor(u).astype(int), 0, view.width - 1)
    row = np.clip(np.floor(v).astype(int), 0, view.height - 1)
    return row, col, z, inside


def test_deterministic_per_seed() -> None:
    a, b, c = generate_room(7, **SMALL), generate_room(7, **SMALL), generate_room(8, **SMALL)
    np.testing.assert_array_equal(a.coord, b.coord)
    for name in a.attributes:
        np.testing.assert_array_equal(a.attributes[name], b.attributes[name])
    for va, vb in zip(a.views, b.views):
        np.testing.assert_array_equal(va.image, vb.image)
        np.testing.assert_array_equal(va.depth, vb.depth)
        np.testing.assert_array_equal(va.label, vb.label)
        np.testing.assert_array_equal(va.cam_to_world, vb.cam_to_world)
    assert a.coord.shape == c.coord.shape and not np.array_equal(a.coord, c.coord)
    assert room_seed(0, 1) != room_seed(0, 2) != room_seed(1, 1)


def test_shapes_dtypes_and_meta(rooms: list[Scene]) -> None:
    scene = rooms[0]
    n = 20000
    assert scene.coord.shape == (n, 3) and scene.coord.dtype == np.float32
    a = scene.attributes
    assert a["color"].shape == (n, 3) and a["color"].dtype == np.uint8
    assert a["normal"].shape == (n, 3) and a["normal"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a["normal"], axis=1), 1.0, atol=1e-5)
    assert a["segment"].dtype == np.int64 and a["instance"].dtype == np.int64
    assert a["segment"].min() >= 0 and a["segment"].max() < len(CLASS_NAMES)
    size = np.array(scene.meta["room_size"])
    assert (scene.coord >= -1e-4).all() and (scene.coord <= size + 1e-4).all()
    assert len(scene.views) == 8
    for view in scene.views:
        assert view.image.shape == (240, 320, 3) and view.image.dtype == np.uint8
        assert view.depth.shape == (240, 320) and view.depth.dtype == np.float32
        assert view.label.shape == (240, 320) and (view.depth > 0).all()  # closed room: every ray hits
        assert np.isclose(view.intrinsics[0, 2], 160.0) and np.isclose(view.intrinsics[1, 2], 120.0)
        assert 1.2 <= view.cam_to_world[2, 3] <= 1.8
        np.testing.assert_allclose(view.cam_to_world[:3, :3].T @ view.cam_to_world[:3, :3], np.eye(3), atol=1e-9)
    assert scene.meta["class_names"] == CLASS_NAMES[:]
    assert CLASS_NAMES[:3] == ["wall", "floor", "ceiling"]
    assert {"dataset": "ditr-synthetic", "ignore_index": -1, "segment": "segment", "seed": 0,
            "generator_version": 1}.items() <= scene.meta.items()


def test_every_class_appears(rooms: list[Scene]) -> None:
    in_points = set(np.concatenate([s.attributes["segment"] for s in rooms]).tolist())
    in_images = set(np.concatenate([v.label.ravel() for s in rooms for v in s.views]).tolist())
    assert in_points == set(range(len(CLASS_NAMES)))
    assert in_images == set(range(len(CLASS_NAMES)))


def test_depth_is_camera_z(rooms: list[Scene]) -> None:
    """Back-projecting pixel centres with the depth puts floor pixels on z=0, ceiling pixels on the ceiling."""
    scene = rooms[1]
    height = scene.meta["room_size"][2]
    for view in scene.views:
        v, u = np.mgrid[0:view.height, 0:view.width]
        rays = np.stack([u + 0.5, v + 0.5, np.ones_like(u)], -1).reshape(-1, 3) @ np.linalg.inv(view.intrinsics).T
        world = (rays * view.depth.reshape(-1, 1)) @ view.cam_to_world[:3, :3].T + view.cam_to_world[:3, 3]
        label = view.label.ravel()
        np.testing.assert_allclose(world[label == CLASS_NAMES.index("floor"), 2], 0.0, atol=1e-4)
        np.testing.assert_allclose(world[label == CLASS_NAMES.index("ceiling"), 2], height, atol=1e-3)


def test_depth_matches_ray_hits() -> None:
    """Rendered depth equals the camera z of the hit point that trimesh itself reports for the pixel ray."""
    import trimesh

    rng = np.random.default_rng(3)
    geometry, items = build_room(rng)
    mesh = trimesh.Trimesh(geometry.vertices, geometry.faces, process=False)
    cam = place_cameras(geometry, items, rng, 1, 40, 30)[0]
    rendering = render(geometry, mesh, [cam])[0]
    v, u = np.mgrid[0:30, 0:40]
    rays = np.stack([u + 0.5, v + 0.5, np.ones_like(u)], -1).reshape(-1, 3) @ np.linalg.inv(cam.intrinsics).T
    origins = np.broadcast_to(cam.cam_to_world[:3, 3], rays.shape)
    hits, index_ray, _ = mesh.ray.intersects_location(origins, rays @ cam.cam_to_world[:3, :3].T, multiple_hits=False)
    z = (hits - cam.cam_to_world[:3, 3]) @ cam.cam_to_world[:3, 2]
    np.testing.assert_allclose(rendering.depth.ravel()[index_ray], z, atol=2e-3)
    assert len(index_ray) == 40 * 30


def test_points_agree_with_rendered_labels_and_colours(rooms: list[Scene]) -> None:
    """Visible points (z within 2 cm of the rendered depth) land on pixels of their own class (>= 99.5 %)."""
    for scene in rooms:
        seg, color, normal = scene.attributes["segment"], scene.attributes["color"], scene.attributes["normal"]
        agree = total = facing = 0
        colour_error = []
        for view in scene.views:
            row, col, z, inside = _project(scene, view)
            visible = inside & (np.abs(z - view.depth[row, col]) <= 0.02)
            agree += int((view.label[row, col] == seg)[visible].sum())
            total += int(visible.sum())
            to_camera = view.cam_to_world[:3, 3] - scene.coord
            facing += int((np.einsum("ij,ij->i", normal, to_camera) > 0)[visible].sum())
            colour_error.append(np.abs(view.image[row, col].astype(int) - color.astype(int))[visible].max(axis=1))
        assert total > 5000
        assert agree / total >= 0.995, f"room {scene.meta['seed']}: {agree / total:.4f}"
        assert facing / total >= 0.98  # normals face the cameras (the rest: far sides of thin boards within 2 cm)
        assert np.median(np.concatenate(colour_error)) <= 12  # same colour function, a pixel's width apart


def test_points_hidden_behind_furniture_exist(rooms: list[Scene]) -> None:
    for scene in rooms:
        hidden = 0
        for view in scene.views:
            row, col, z, inside = _project(scene, view)
            behind = inside & (view.depth[row, col] < z - 0.5) & np.isin(view.label[row, col], FURNITURE)
            hidden += int(behind.sum())
        assert hidden > 100


def test_write_rooms_round_trip(tmp_path) -> None:
    paths = write_rooms(tmp_path / "rooms", 2, 11, **SMALL)
    assert [p.name for p in paths] == ["room_0000", "room_0001"]
    again = generate_room(room_seed(11, 1), **SMALL)
    loaded = Scene.load(paths[1])
    np.testing.assert_array_equal(loaded.coord, again.coord)
    for name, array in again.attributes.items():
        np.testing.assert_array_equal(loaded.attributes[name], array)
    assert loaded.meta["seed"] == room_seed(11, 1) and loaded.meta["name"] == "room_0001"
    for lv, v in zip(loaded.views, again.views):
        np.testing.assert_array_equal(lv.read_image(), v.image)  # PNG: exact colours
        np.testing.assert_array_equal(lv.read_label(), v.label)
        np.testing.assert_allclose(lv.read_depth(), v.depth, atol=5.1e-4)  # uint16 millimetres
        np.testing.assert_allclose(lv.cam_to_world, v.cam_to_world)


def test_cli_synth(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["synth", str(out), "--scenes", "2", "--seed", "4", "--points", "1500", "--views", "2",
            "--width", "48", "--height", "32"]
    assert cli.main(args) == 0
    assert str(out.resolve()) in capsys.readouterr().out
    scene = Scene.load(out / "room_0001")
    assert scene.num_points == 1500 and len(scene.views) == 2 and scene.views[0].width == 48
    assert cli.main(["synth", str(out), "--scenes", "0"]) == 2
    assert "--scenes" in capsys.readouterr().err
