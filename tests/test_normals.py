"""ditr.normals: the one normal estimator (imports, predict) on shapes whose normals are known."""

from __future__ import annotations

import numpy as np
import pytest

from ditr.errors import DitrError
from ditr.normals import estimate_normals, scene_normals
from ditr.scene import View


def sphere(n: int, radius: float, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return radius * v / np.linalg.norm(v, axis=1, keepdims=True)


def test_plane_normals_are_unit_and_face_the_viewpoint():
    rng = np.random.default_rng(0)
    plane = np.c_[rng.uniform(-1, 1, (4000, 2)), rng.normal(0, 0.002, 4000)]  # a slightly noisy floor
    above = estimate_normals(plane, 0.1, viewpoint=np.array([0.0, 0.0, 1.0]))
    below = estimate_normals(plane, 0.1, viewpoint=np.array([0.0, 0.0, -1.0]))
    assert above.dtype == np.float32 and above.shape == plane.shape
    assert np.allclose(np.linalg.norm(above, axis=1), 1, atol=1e-5)
    assert (above[:, 2] > 0.99).all() and (below[:, 2] < -0.99).all()


def test_sphere_normals_match_the_radius_direction():
    pts = sphere(20000, 1.0)
    inward = estimate_normals(pts, 0.15)  # default viewpoint: the box centre, inside the sphere
    outward = estimate_normals(pts, 0.15, viewpoint=np.array([0.0, 0.0, 50.0]))
    cos = np.einsum("ij,ij->i", inward, -pts)
    assert np.median(cos) > 0.99 and cos.min() > 0.9  # cubes of 0.15 m: the sphere is flat at that scale
    top = pts[:, 2] > 0.3  # the side that faces a viewpoint high above points outwards
    assert (np.einsum("ij,ij->i", outward[top], pts[top]) > 0.9).all()


def test_a_floor_and_wall_seen_from_the_room_face_into_it():
    rng = np.random.default_rng(1)
    floor = np.c_[rng.uniform(0, 2, (3000, 2)), np.zeros(3000)]
    wall = np.c_[rng.uniform(0, 2, 2000), np.full(2000, 2.0), rng.uniform(0.1, 2, 2000)]
    normals = estimate_normals(np.concatenate([floor, wall]), 0.05, viewpoint=np.array([1.0, 1.0, 1.5]))
    assert (normals[:3000] @ [0, 0, 1] > 0.95).mean() > 0.9  # floor: up, towards the viewpoint
    assert (normals[3000:] @ [0, -1, 0] > 0.95).mean() > 0.8  # wall: into the room


def test_far_from_the_origin_isolated_points_and_bad_input():
    rng = np.random.default_rng(2)
    plane = np.c_[rng.uniform(0, 1, (2000, 2)), np.zeros(2000)] + [5e5, 4e6, 30.0]  # UTM-like coordinates
    lone = np.array([[5e5 + 20, 4e6 + 20, 50.0]])
    normals = estimate_normals(np.concatenate([plane, lone]), 0.1, viewpoint=np.array([5e5, 4e6, 40.0]))
    assert (normals[:-1, 2] > 0.99).all()
    assert np.array_equal(normals[-1], [0, 0, 0])  # fewer than 3 neighbours: no plane, no normal
    assert estimate_normals(np.zeros((0, 3))).shape == (0, 3)
    with pytest.raises(DitrError, match=r"shape \(N, 3\)"):
        estimate_normals(np.zeros((4, 2)))
    with pytest.raises(DitrError, match="cell"):
        estimate_normals(plane, 0.0)


def test_scene_normals_face_the_cameras():
    rng = np.random.default_rng(3)
    plane = np.c_[rng.uniform(0, 1, (2000, 2)), np.zeros(2000)]
    pose = np.eye(4)
    pose[:3, 3] = [0.5, 0.5, -2.0]  # a camera below the plane: its normals point down
    view = View(name="v", width=4, height=4, intrinsics=np.eye(3), cam_to_world=pose)
    assert (scene_normals(plane, [view], 0.1)[:, 2] < -0.99).all()
    assert (np.abs(scene_normals(plane, [], 0.1)[:, 2]) > 0.99).all()  # no camera: the box centre


def test_the_cube_size_follows_the_density():
    rng = np.random.default_rng(4)
    sparse = np.c_[rng.uniform(0, 4, (800, 2)), np.zeros(800)]  # ~14 cm apart: 4 cm cubes hold 1 point
    assert (estimate_normals(sparse, 0.04) == 0).all(axis=1).mean() > 0.5
    auto = estimate_normals(sparse, viewpoint=np.array([2.0, 2.0, 1.0]))
    assert (auto[:, 2] > 0.99).mean() > 0.98  # larger cubes: (nearly) every point has a plane
    dense = np.c_[rng.uniform(0, 1, (20000, 2)), np.zeros(20000)]
    assert np.array_equal(estimate_normals(dense), estimate_normals(dense, 0.04))  # dense enough at 4 cm
