"""Synthetic streets: a spinning-LiDAR scan, six posed cameras, and ground-truth visibility per (view, point).

Each street (:mod:`.street`) is scanned by a 32- or 64-beam LiDAR (:mod:`.lidar`) on the roof of an
ego car and photographed by a rig of six cameras around it, mounted 0.69-1.04 m away from the LiDAR
(as on nuScenes' cars), so parallax makes real occlusions: a pole or a car hides, from a camera,
surfaces the LiDAR saw behind it. Because the geometry is known exactly, so is whether each LiDAR
point is visible from each camera: :func:`.render.true_visibility` casts a ray from the camera
centre to the surface point. That ground truth is what an occlusion test (``ditr.projection``) can
be measured against. See docs/synthetic.md#outdoor-scenes.

The points carry what a LiDAR dataset has (coordinates in the LiDAR's frame, intensity as
``strength``, class and instance labels); no colour, normals or depth maps. ``generate_street(seed)``
is a pure function of the seed; ``write_streets`` derives one seed per street from ``(seed, index)``
(:func:`~ditr.io.synthetic.room_seed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from ...fileio import atomic_save_npz
from ...scene import Scene, View
from . import room_seed
from .geometry import Geometry
from .lidar import LidarConfig, intensity, scan
from .render import Camera, look_at, render, true_visibility
from .street import CLASS_NAMES, REFLECTIVITY, build_street
from .textures import sky_color, surface_color

__all__ = ["CAMERA_RIG", "CLASS_NAMES", "GENERATOR_VERSION", "GT_FILE", "LIDAR_FILE", "StreetScan",
           "generate_street", "render_street_views", "rig_cameras", "write_streets"]

#: Bumped whenever the same seed and settings would produce a different street.
GENERATOR_VERSION = 1
DATASET_NAME = "ditr-synthetic-outdoor"
#: Ground-truth visibility, written into every street's directory.
GT_FILE = "visibility_gt.npz"
#: Per-point LiDAR structure the scene format has no field for (ring, azimuth column).
LIDAR_FILE = "lidar.npz"
#: A ray from a camera may meet a surface this close (m) before the point and still see it.
GT_TOLERANCE = 0.01
#: Height (m) of the LiDAR's optical centre above the road, on the ego car's roof.
LIDAR_HEIGHT = 1.8
#: Horizontal field of view (degrees) of every camera; six at 55-70 degree spacing overlap a little.
FIELD_OF_VIEW_DEG = 70.0
#: The camera rig (like nuScenes'): name, yaw (degrees, counter-clockwise from the car's forward
#: axis) and the camera centre's offset from the LiDAR in the LiDAR frame (x forward, y left, z up).
CAMERA_RIG: tuple[tuple[str, float, tuple[float, float, float]], ...] = (
    ("CAM_FRONT", 0.0, (1.0, 0.0, -0.3)),
    ("CAM_FRONT_LEFT", 55.0, (0.8, 0.5, -0.3)),
    ("CAM_FRONT_RIGHT", -55.0, (0.8, -0.5, -0.3)),
    ("CAM_BACK", 180.0, (-1.0, 0.0, -0.3)),
    ("CAM_BACK_LEFT", 110.0, (-0.3, 0.55, -0.3)),
    ("CAM_BACK_RIGHT", -110.0, (-0.3, -0.55, -0.3)),
)


@dataclass
class StreetScan:
    """One street: the scene (points, views, meta) plus what the scene format cannot hold.

    ``visible`` and ``in_frame`` are (V, N) ground truth in view order; ``surface`` (N, 3) is where
    each beam really met the surface (the points are moved off it by range noise), in the points'
    frame (the LiDAR's: x forward, y left, z up; ``meta["lidar"]["sensor_to_world"]`` places it in
    the street); ``ring`` and ``column`` index the beam (into ``meta["lidar"]["elevations_deg"]``)
    and the azimuth step.
    """

    scene: Scene
    visible: np.ndarray
    in_frame: np.ndarray
    surface: np.ndarray
    ring: np.ndarray
    column: np.ndarray
    tolerance: float

    def save(self, path: str | Path, *, image_format: str = "png") -> Path:
        """Write the scene (:meth:`Scene.save`), then :data:`LIDAR_FILE` and :data:`GT_FILE` beside it."""
        path = self.scene.save(path, image_format=image_format)
        atomic_save_npz(path / LIDAR_FILE, ring=self.ring.astype(np.uint8), column=self.column.astype(np.int32))
        atomic_save_npz(path / GT_FILE, visible=self.visible, in_frame=self.in_frame,
                        views=np.array([v.name for v in self.scene.views]),
                        surface=self.surface.astype(np.float32), tolerance=np.float64(self.tolerance))
        return path


def rig_cameras(sensor_to_world: np.ndarray, width: int, height: int) -> list[Camera]:
    """The :data:`CAMERA_RIG` cameras of a LiDAR at ``sensor_to_world``: level pinholes, principal
    point at the image centre, :data:`FIELD_OF_VIEW_DEG` horizontally."""
    f = width / 2 / np.tan(np.radians(FIELD_OF_VIEW_DEG) / 2)
    k = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    cameras = []
    for _, yaw, offset in CAMERA_RIG:
        position = sensor_to_world[:3, :3] @ np.array(offset) + sensor_to_world[:3, 3]
        forward = sensor_to_world[:3, :3] @ np.array([np.cos(np.radians(yaw)), np.sin(np.radians(yaw)), 0.0])
        cameras.append(Camera(k, look_at(position, position + forward), width, height))
    return cameras


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The layout's and the sensor noise's random streams of a street seed."""
    layout, noise = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    return layout, noise


def _layout(rng: np.random.Generator) -> tuple[Geometry, trimesh.Trimesh, np.ndarray]:
    """A street's geometry, its mesh for ray casting and the LiDAR's pose (4x4 sensor to world)."""
    street = build_street(rng)
    geometry = street.geometry
    mesh = trimesh.Trimesh(geometry.vertices, geometry.faces, process=False)
    c, s = np.cos(street.heading), np.sin(street.heading)
    sensor_to_world = np.eye(4)
    sensor_to_world[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    sensor_to_world[:3, 3] = [*street.ego, LIDAR_HEIGHT]
    return geometry, mesh, sensor_to_world


def render_street_views(seed: int, *, width: int = 800, height: int = 450,
                        views: int = len(CAMERA_RIG)) -> tuple[np.ndarray, np.ndarray]:
    """The first ``views`` rig cameras' images (uint8 RGB, (V, H, W, 3)) and label images (int, (V, H, W),
    -1 for sky) of street ``seed``: what :func:`generate_street` renders, without scanning it."""
    if not 1 <= views <= len(CAMERA_RIG):
        raise ValueError(f"views must be 1-{len(CAMERA_RIG)}, got {views}")
    geometry, mesh, sensor_to_world = _layout(_streams(seed)[0])
    renderings = render(geometry, mesh, rig_cameras(sensor_to_world, width, height)[:views], background=sky_color)
    return np.stack([r.image for r in renderings]), np.stack([r.label for r in renderings])


def generate_street(seed: int, *, lidar: LidarConfig | None = None, width: int = 800, height: int = 450,
                    tolerance: float = GT_TOLERANCE) -> StreetScan:
    """One street as an in-memory :class:`StreetScan` (images and label images as arrays).

    ``lidar`` defaults to ``LidarConfig.velodyne(32)``. The layout depends on the seed only; the
    noise on range and intensity is drawn from a second stream of the same seed.
    """
    if width < 1 or height < 1 or not tolerance >= 0:
        raise ValueError(f"need a positive image size and tolerance >= 0, got {width=}, {height=}, {tolerance=}")
    lidar = lidar if lidar is not None else LidarConfig.velodyne(32)
    layout_rng, noise_rng = _streams(seed)
    geometry, mesh, sensor_to_world = _layout(layout_rng)

    sweep = scan(geometry, mesh, sensor_to_world, lidar, noise_rng)
    segment = geometry.face_class[sweep.face]
    strength = intensity(REFLECTIVITY[segment], surface_color(geometry, sweep.surface, sweep.face),
                         geometry.face_normals[sweep.face], sweep.direction, lidar.intensity_noise, noise_rng)
    # the scene is written in the LiDAR's frame, as LiDAR datasets are (and the outdoor recipes'
    # rotations about the origin and point-range clips assume)
    world_to_sensor = np.linalg.inv(sensor_to_world)
    coord = (sweep.points @ world_to_sensor[:3, :3].T + world_to_sensor[:3, 3]).astype(np.float32)
    surface = sweep.surface @ world_to_sensor[:3, :3].T + world_to_sensor[:3, 3]

    cameras = rig_cameras(sensor_to_world, width, height)
    renderings = render(geometry, mesh, cameras, background=sky_color)
    stored = coord.astype(np.float64) @ sensor_to_world[:3, :3].T + sensor_to_world[:3, 3]  # coord.npy, in the street
    in_frame, visible = true_visibility(geometry, mesh, cameras, stored, sweep.surface, tolerance)
    views = [View(name=name, width=width, height=height, intrinsics=cam.intrinsics,
                  cam_to_world=world_to_sensor @ cam.cam_to_world, image=r.image, label=r.label)
             for (name, _, _), cam, r in zip(CAMERA_RIG, cameras, renderings)]
    meta = {"dataset": DATASET_NAME, "class_names": list(CLASS_NAMES), "ignore_index": -1, "segment": "segment",
            "seed": int(seed), "generator_version": GENERATOR_VERSION,
            "lidar": {**lidar.as_meta(), "height": LIDAR_HEIGHT, "sensor_to_world": sensor_to_world.tolist(),
                      "file": LIDAR_FILE},
            "visibility_gt": {"file": GT_FILE, "tolerance": tolerance},
            "acquisition": {"kind": "lidar"}}  # in the sensor's frame
    attributes = {"strength": strength, "segment": segment.astype(np.int64),
                  "instance": geometry.face_instance[sweep.face].astype(np.int64)}
    return StreetScan(scene=Scene(coord=coord, attributes=attributes, views=views, meta=meta), visible=visible,
                      in_frame=in_frame, surface=surface, ring=sweep.ring, column=sweep.column,
                      tolerance=tolerance)


def write_streets(out_dir: str | Path, scenes: int, seed: int, *, image_format: str = "png",
                  on_scene: Callable[[int, Path], None] | None = None, lidar: LidarConfig | None = None,
                  width: int = 800, height: int = 450) -> list[Path]:
    """Write streets ``street_0000`` ... into ``out_dir`` (:meth:`StreetScan.save`); returns their paths.

    Street ``i`` uses the seed ``room_seed(seed, i)``. ``on_scene(i, path)`` is called after each.
    """
    out_dir = Path(out_dir)
    paths = []
    for i in range(scenes):
        street = generate_street(room_seed(seed, i), lidar=lidar, width=width, height=height)
        street.scene.meta["name"] = f"street_{i:04d}"
        paths.append(street.save(out_dir / f"street_{i:04d}", image_format=image_format))
        if on_scene is not None:
            on_scene(i, paths[-1])
    return paths
