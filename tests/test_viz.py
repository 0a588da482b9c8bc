"""Pictures: overlay dot sizes and depth scales, view render file names, the viewer's starting camera."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import look_at, wall_and_box_scene
from PIL import Image

from ditr.projection import ProjectionConfig, project_scene
from ditr.scene import View
from ditr.viz.overlay import MIN_DOT_PX, depth_scale, dot_diameter, nice_step, render_overlays
from ditr.viz.render import render_view_labels, view_file_names
from ditr.viz.viewer import ABOVE, BEHIND, viewer_camera


# ------------------------------------------------------------------------------------------ overlays
def test_dot_size_follows_the_picture_and_thins_out_when_dense():
    few = dot_diameter(1280, 720, 500)
    assert few == pytest.approx(0.0045 * np.hypot(1280, 720))  # about half a percent of the diagonal
    assert dot_diameter(640, 360, 500) == pytest.approx(few / 2)  # scales with the picture
    dense = dot_diameter(1280, 720, 50_000)
    assert MIN_DOT_PX <= dense < few
    assert 50_000 * np.pi * (dense / 2) ** 2 <= 0.31 * 1280 * 720  # the dots leave most of the photo visible
    assert dot_diameter(320, 240, 10**7) == MIN_DOT_PX  # never invisible
    assert dot_diameter(1280, 720, 0) == few  # nothing to thin out


def test_depth_scale_is_a_percentile_range_in_round_numbers():
    assert [nice_step(s) for s in (1.0, 9.0, 47.0, 0.3)] == [0.2, 2.0, 10.0, 0.1]
    rng = np.random.default_rng(0)
    street = np.concatenate([rng.uniform(3, 40, 5000), [95.0, 99.0, 100.0]])  # a few far outliers
    low, high = depth_scale(street)
    assert (low, high) == (0.0, 40.0)  # not 0-100 m: the near points get the colours
    assert low <= np.percentile(street, 2) and high >= np.percentile(street, 98)
    room = rng.uniform(1.2, 6.3, 3000)
    assert depth_scale(room) == (1.0, 7.0)
    assert depth_scale(np.full(10, 2.5)) == (2.5, 2.5 + nice_step(0.0))  # flat: still a range
    assert depth_scale(np.zeros(0)) == (0.0, 1.0)


def test_overlay_puts_title_and_colour_bar_above_the_photo(tmp_path):
    scene = wall_and_box_scene()
    (path,) = render_overlays(scene, project_scene(scene, ProjectionConfig()), tmp_path)
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert path.name == "cam0.png" and picture.shape[1] == 720  # a 64 px wide image is enlarged
    assert picture.shape[0] > 720 * 48 / 64 + 90  # the band above the photo
    assert (picture[-5:] != 255).any(axis=2).all()  # the photo reaches the bottom edge


# ------------------------------------------------------------------------------------------ label renders
def test_view_file_names_are_prefixed_once_and_unique():
    assert view_file_names(["view_07", "00011", "CAM FRONT", "view", "view-2"]) == [
        "view_07.png", "view_00011.png", "view_CAM_FRONT.png", "view_view.png", "view_2.png"]
    assert view_file_names(["07", "view_07"]) == ["view_07.png", "view_07_1.png"]


def test_view_render_is_named_after_the_view(tmp_path):
    scene = wall_and_box_scene()
    scene = dataclasses.replace(scene, views=[dataclasses.replace(scene.views[0], name="view_03")])
    (path,) = render_view_labels(scene, scene.segment(), scene.class_names, tmp_path, [0])
    assert path.name == "view_03.png" and Image.open(path).size[0] >= 2 * 480  # small views enlarged


# ------------------------------------------------------------------------------------------ viewer camera
def _room(with_ceiling: bool) -> tuple[np.ndarray, np.ndarray]:
    """A 6 x 4 x 2.8 m box room sampled on a 10 cm grid: floor (1), walls (0) and maybe a ceiling (2)."""
    xs, ys, zs = np.arange(0, 6.01, 0.1), np.arange(0, 4.01, 0.1), np.arange(0, 2.81, 0.1)
    gx, gy = np.meshgrid(xs, ys)
    floor = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
    wy, wz = (a.ravel() for a in np.meshgrid(ys, zs))
    walls = [np.stack([np.full(wy.size, x), wy, wz], 1) for x in (0.0, 6.0)]
    parts = [(floor, 1), *[(w, 0) for w in walls]]
    if with_ceiling:
        parts.append((floor + [0, 0, 2.8], 2))
    coord = np.concatenate([p for p, _ in parts]).astype(np.float32)
    labels = np.concatenate([np.full(len(p), c) for p, c in parts])
    return coord, labels


def _eye(camera: dict) -> np.ndarray:
    cp, sp = np.cos(camera["pitch"]), np.sin(camera["pitch"])
    direction = np.array([cp * np.cos(camera["yaw"]), cp * np.sin(camera["yaw"]), sp])
    return np.asarray(camera["target"]) + camera["dist"] * direction


def test_viewer_starts_above_a_room_corner_with_the_ceiling_hidden():
    coord, labels = _room(with_ceiling=True)
    names = ["wall", "floor", "ceiling"]
    near_corner = View("cam", 64, 48, np.eye(3), look_at([5.5, 3.5, 1.5], [3, 2, 1]))
    camera = viewer_camera(coord, labels, names, [near_corner])
    assert camera["indoor"] and camera["ceiling_classes"] == [2]
    assert 2.4 < camera["ceiling_z"] < 2.8  # the top band: the ceiling, not the walls below it
    eye = _eye(camera)
    assert eye[0] > 6 and eye[1] > 4  # beyond the corner nearest the view's camera, looking in
    assert eye[2] > 2.8 and 0.5 < camera["pitch"] < 1.2  # raised: looking down into the room
    assert np.allclose(camera["target"][:2], [3, 2])
    assert 2 <= camera["point_size"] <= 5
    # no ceiling class: the height band alone finds it; no ceiling at all: nothing hidden
    assert viewer_camera(coord, np.zeros_like(labels), ["thing"])["ceiling_classes"] == []
    open_room, open_labels = _room(with_ceiling=False)
    camera = viewer_camera(open_room, open_labels, names)
    assert camera["indoor"] and camera["ceiling_z"] is None and camera["ceiling_classes"] == []


def test_viewer_starts_behind_and_above_a_street_sensor():
    rng = np.random.default_rng(0)
    coord = np.concatenate([rng.uniform([-60, -60, -1.8], [60, 60, -1.7], (4000, 3)),  # road around the sensor
                            rng.uniform([8, -60, -1.8], [9, 60, 8], (1000, 3))]).astype(np.float32)  # a facade
    labels = np.zeros(len(coord), np.int64)
    front = View("CAM_FRONT", 64, 48, np.eye(3), look_at([0, 0.5, 0], [0, 10, 0]))  # facing +y
    camera = viewer_camera(coord, labels, ["road"], [front])
    assert not camera["indoor"] and camera["ceiling_z"] is None
    eye = _eye(camera)
    np.testing.assert_allclose(eye, [0, 0.5 - BEHIND, ABOVE], atol=1e-4)  # behind the sensor, raised
    assert camera["target"][1] > eye[1]  # looking forward, the way the front camera looks
    no_views = _eye(viewer_camera(coord, labels, ["road"]))
    np.testing.assert_allclose(no_views, [-BEHIND, 0, ABOVE], atol=1e-4)  # the origin, facing +x


# ------------------------------------------------------------------------------------------ study charts
def test_paired_differences_chart_keeps_absent_classes_out_of_their_set(tmp_path):
    from ditr.viz.labels import plot_paired_differences

    differences = {"validation": {"road": (0.5, -0.2, 1.2), "car": (-0.3, -0.6, -0.1), "sign": (0.0, 0.0, 0.0)},
                   "test": {"road": (0.8, 0.2, 1.4), "car": None}}
    path = plot_paired_differences(differences, tmp_path / "chart.png", "a title\nsecond line")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] == 750 and image.size[1] > 200
