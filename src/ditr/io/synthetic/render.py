"""Cameras, ray casting, ray-cast rendering (RGB, metric depth, labels) and surface point sampling.

Rendering casts one ray per pixel centre through all views at once; trimesh picks embree (embreex)
when installed and its pure-numpy intersector otherwise. Embree only reports which triangle a ray
hits first; the hit point is recomputed here in float64 from that triangle's plane, so depth is the
exact camera-frame z of the surface (not a float32 ray length) and colours are evaluated at the
same 3D point a sampled surface point would use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import trimesh

from .geometry import Geometry
from .layout import CLEARANCE
from .textures import surface_color


@dataclass
class Camera:
    """Pinhole camera, OpenCV convention (x right, y down, z forward); ``cam_to_world`` is 4x4."""

    intrinsics: np.ndarray
    cam_to_world: np.ndarray
    width: int
    height: int


@dataclass
class Rendering:
    image: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres, camera z; 0 where no surface was hit
    label: np.ndarray  # (H, W) int64 class ids, -1 where no surface was hit


def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """4x4 camera-to-world pose of an OpenCV camera at ``position`` looking at ``target`` (z up, no roll)."""
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.column_stack([right, down, forward])
    pose[:3, 3] = position
    return pose


def place_cameras(geometry: Geometry, items: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator,
                  num_views: int, width: int, height: int) -> list[Camera]:
    """Cameras at 1.2-1.8 m in free space, each aimed at an item (half of them) or at a far wall point.

    Aiming at items makes every class likely to be photographed; targets at least 1.5 m away and
    8-35 degrees below eye level give the downward pitch of a hand-held capture (and keep the
    ceiling, seen at grazing angles where pixels are coarsest, to the image tops).
    """
    size = geometry.size
    solid = geometry.part_solid
    cameras: list[Camera] = []
    attempts = 0
    while len(cameras) < num_views:
        # keep 0.6 m from every item, relaxed step by step in a room too crowded for that
        margin = 2 * CLEARANCE * 0.5 ** (attempts // 200)
        attempts += 1
        position = np.array([*rng.uniform(0.4, size[:2] - 0.4), rng.uniform(1.2, 1.8)])
        inside = (position >= geometry.part_lo[solid] - margin) & (position <= geometry.part_hi[solid] + margin)
        if inside.all(axis=1).any():
            continue
        if items and rng.random() < 0.5:
            item_lo, item_hi = items[int(rng.integers(len(items)))]
            target = (item_lo + item_hi) / 2
        else:
            target = np.array([*rng.uniform([0.0, 0.0], size[:2]), rng.uniform(0.3, 1.5)])
            axis = int(rng.integers(2))
            target[axis] = size[axis] * float(rng.integers(2))  # a point on one of the four walls
        offset = target - position
        horizontal = np.linalg.norm(offset[:2])
        pitch = np.degrees(np.arctan2(offset[2], horizontal))
        if np.linalg.norm(offset) < 2.0 or not -30.0 <= pitch <= -3.0:
            continue
        fov = np.radians(rng.uniform(58.0, 62.0))  # horizontal field of view
        f = width / 2 / np.tan(fov / 2)
        k = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
        cameras.append(Camera(k, look_at(position, target), width, height))
    return cameras


def cast_rays(geometry: Geometry, mesh: trimesh.Trimesh, origins: np.ndarray,
              directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First triangle hit by each ray and the ray parameter of the hit: ``(tri (R,), t (R,))``.

    The hit point is ``origin + t * direction`` (directions need not be unit length); ``tri`` is -1
    and ``t`` infinite where nothing is hit in front of the origin. ``t`` is exact in float64: the ray
    meets the plane of the triangle embree reports, not embree's float32 distance.
    """
    tri = np.asarray(mesh.ray.intersects_first(origins, directions), dtype=np.int64)
    hit = tri >= 0
    normal = geometry.face_normals[np.maximum(tri, 0)]
    v0 = geometry.vertices[geometry.faces[np.maximum(tri, 0), 0]]
    denom = np.einsum("ij,ij->i", normal, directions)
    hit &= np.abs(denom) > 1e-12
    t = np.where(hit, np.einsum("ij,ij->i", normal, v0 - origins) / np.where(hit, denom, 1.0), 0.0)
    hit &= t > 0
    return np.where(hit, tri, -1), np.where(hit, t, np.inf)


def render(geometry: Geometry, mesh: trimesh.Trimesh, cameras: list[Camera],
           background: Callable[[np.ndarray], np.ndarray] | None = None) -> list[Rendering]:
    """Ray-cast all cameras in one batch: first hit per pixel centre -> colour, camera z, class id.

    Pixels whose ray hits nothing get depth 0, label -1 and the colour ``background`` gives their
    world-frame ray directions ((R, 3) -> (R, 3) uint8; black without it).
    """
    if not cameras:
        return []
    origin_parts, direction_parts, counts = [], [], []
    for cam in cameras:
        v, u = np.mgrid[0:cam.height, 0:cam.width]
        pix = np.stack([u.ravel() + 0.5, v.ravel() + 0.5, np.ones(u.size)], axis=1)
        rays_cam = pix @ np.linalg.inv(cam.intrinsics).T  # z = 1 in the camera frame
        direction_parts.append(rays_cam @ cam.cam_to_world[:3, :3].T)
        origin_parts.append(np.broadcast_to(cam.cam_to_world[:3, 3], (u.size, 3)))
        counts.append(u.size)
    origins, directions = np.concatenate(origin_parts), np.concatenate(direction_parts)
    # t is the camera z because every direction has z_cam = 1
    tri, t = cast_rays(geometry, mesh, origins, directions)
    hit = tri >= 0
    points = origins[hit] + t[hit, None] * directions[hit]
    rgb = np.zeros((len(tri), 3), dtype=np.uint8)
    rgb[hit] = surface_color(geometry, points, tri[hit])
    if background is not None:
        rgb[~hit] = background(directions[~hit])
    label = np.where(hit, geometry.face_class[np.maximum(tri, 0)], -1)
    depth = np.where(hit, t, 0.0).astype(np.float32)
    out, start = [], 0
    for cam, n in zip(cameras, counts):
        sl = slice(start, start + n)
        out.append(Rendering(rgb[sl].reshape(cam.height, cam.width, 3), depth[sl].reshape(cam.height, cam.width),
                             label[sl].reshape(cam.height, cam.width)))
        start += n
    return out


def sample_points(geometry: Geometry, rng: np.random.Generator, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform points on the visible surfaces: (points (N, 3), triangle index (N,)).

    Points that fall inside another part (hidden contact areas) are rejected and replaced, so the
    result holds exactly ``num_points`` points, all on surfaces a camera could see.
    """
    area = geometry.face_areas
    prob = area / area.sum()
    points, faces, have = [], [], 0
    while have < num_points:
        m = int(1.25 * (num_points - have)) + 64
        face = rng.choice(len(prob), size=m, p=prob)
        r1, r2 = np.sqrt(rng.random(m)), rng.random(m)
        tri = geometry.vertices[geometry.faces[face]]
        p = (1 - r1)[:, None] * tri[:, 0] + (r1 * (1 - r2))[:, None] * tri[:, 1] + (r1 * r2)[:, None] * tri[:, 2]
        keep = ~geometry.hidden(p, geometry.face_part[face])
        points.append(p[keep])
        faces.append(face[keep])
        have += int(keep.sum())
    return np.concatenate(points)[:num_points], np.concatenate(faces)[:num_points]


def true_visibility(geometry: Geometry, mesh: trimesh.Trimesh, cameras: list[Camera], points: np.ndarray,
                    surface: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth ``(in_frame, visible)``, both (V, N) bool, of ``points`` in ``cameras``.

    ``in_frame``: the point projects in front of the camera (z > 1e-6) into the image (pixel
    ``[0, width) x [0, height)``), tested on ``points`` as stored (what a projection of the scene
    sees). ``visible``: in frame, and the first surface on the ray from the camera centre towards
    the point's ``surface`` position (where it really lies; ``points`` may carry sensor noise) is
    not more than ``tolerance`` metres before it. A point on the surface the ray hits first counts
    as visible.
    """
    coord = np.asarray(points, dtype=np.float64)
    in_frame = np.zeros((len(cameras), len(coord)), dtype=bool)
    for i, cam in enumerate(cameras):
        world_to_cam = np.linalg.inv(cam.cam_to_world)
        q = (coord @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]) @ cam.intrinsics.T
        z = q[:, 2]
        u, v = q[:, 0] / np.where(z > 1e-6, z, 1.0), q[:, 1] / np.where(z > 1e-6, z, 1.0)
        in_frame[i] = (z > 1e-6) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
    visible = np.zeros_like(in_frame)
    view, point = np.nonzero(in_frame)
    if len(view):
        origins = np.stack([cam.cam_to_world[:3, 3] for cam in cameras])[view]
        directions = np.asarray(surface, dtype=np.float64)[point] - origins  # t = 1 at the point
        _, t = cast_rays(geometry, mesh, origins, directions)
        visible[view, point] = t >= 1.0 - tolerance / np.linalg.norm(directions, axis=1)
    return in_frame, visible
