"""Synthetic indoor rooms: procedural geometry, posed RGB-D images with labels, and a labelled point cloud.

The rooms exist so that the whole pipeline (projection, features, DITR training, the demo) can be
exercised and tested without downloading a dataset, with exact ground truth for visibility and
2D/3D label agreement. They are designed so that images carry information the 3D input lacks:
several classes are nearly identical in geometry (flat wall panels: door, window, picture,
whiteboard; a rug on the floor; cabinets and shelves of the same outer size) and differ only in
appearance. See docs/synthetic.md.

``generate_room(seed)`` is a pure function of the seed; ``write_rooms`` derives one seed per room
from ``(seed, index)`` so a room does not change when more rooms are requested.

Streets scanned by a spinning LiDAR, with ground-truth visibility, are in :mod:`.outdoor`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import trimesh

from ...scene import Scene, View
from .layout import CLASS_NAMES, build_room
from .render import place_cameras, render, sample_points
from .textures import surface_color

__all__ = ["CLASS_NAMES", "GENERATOR_VERSION", "ensure_rooms", "generate_room", "room_seed", "write_rooms"]

#: Bumped whenever the same seed would produce a different room.
GENERATOR_VERSION = 1
DATASET_NAME = "ditr-synthetic"


def room_seed(seed: int, index: int) -> int:
    """Seed of room ``index`` in a set generated with ``seed`` (independent streams per room)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def generate_room(seed: int, *, num_points: int = 20000, num_views: int = 8, width: int = 320,
                  height: int = 240) -> Scene:
    """One synthetic room as an in-memory :class:`~ditr.scene.Scene` (images, depth, labels as arrays).

    Points carry ``color`` (the shaded colour the cameras see there), ``normal`` (of the face),
    ``segment`` (class id into :data:`CLASS_NAMES`) and ``instance``.
    """
    if num_points < 1 or num_views < 0 or width < 1 or height < 1:
        raise ValueError(f"need num_points >= 1, num_views >= 0 and a positive image size, got "
                         f"{num_points=}, {num_views=}, {width=}, {height=}")
    rng = np.random.default_rng(seed)
    geometry, items = build_room(rng)
    mesh = trimesh.Trimesh(geometry.vertices, geometry.faces, process=False)
    cameras = place_cameras(geometry, items, rng, num_views, width, height)
    renderings = render(geometry, mesh, cameras)
    points, faces = sample_points(geometry, rng, num_points)
    views = [View(name=f"view_{i:02d}", width=width, height=height, intrinsics=cam.intrinsics,
                  cam_to_world=cam.cam_to_world, image=r.image, depth=r.depth, label=r.label)
             for i, (cam, r) in enumerate(zip(cameras, renderings))]
    attributes = {
        "color": surface_color(geometry, points, faces),
        "normal": geometry.face_normals[faces].astype(np.float32),
        "segment": geometry.face_class[faces].astype(np.int64),
        "instance": geometry.face_instance[faces].astype(np.int64),
    }
    meta = {"dataset": DATASET_NAME, "class_names": list(CLASS_NAMES), "ignore_index": -1, "segment": "segment",
            "seed": int(seed), "generator_version": GENERATOR_VERSION,
            "room_size": [round(float(x), 4) for x in geometry.size]}
    return Scene(coord=points.astype(np.float32), attributes=attributes, views=views, meta=meta)


def write_rooms(out_dir: str | Path, scenes: int, seed: int, *, image_format: str = "png",
                on_room: Callable[[int, Path], None] | None = None, **room_kwargs: int) -> list[Path]:
    """Write rooms ``room_0000`` ... into ``out_dir`` with :meth:`Scene.save`; returns their paths.

    Images default to PNG so that pixel colours equal the point colours exactly (JPEG would blur
    the textures' edges). ``on_room(i, path)`` is called after each room, e.g. for a progress bar.
    """
    out_dir = Path(out_dir)
    paths = []
    for i in range(scenes):
        scene = generate_room(room_seed(seed, i), **room_kwargs)
        scene.meta["name"] = f"room_{i:04d}"
        path = scene.save(out_dir / f"room_{i:04d}", image_format=image_format)
        paths.append(path)
        if on_room is not None:
            on_room(i, path)
    return paths


def ensure_rooms(directory: str | Path, count: int, seed: int, points: int, views: int,
                 on_room: Callable[[], None] | None = None, indices: Sequence[int] | None = None) -> list[Path]:
    """Rooms ``room_0000``... of a set (``seed``) and size in ``directory``, generated only where
    missing or made with other settings, so repeated runs (the demo, tests, benchmarks) reuse them.

    ``indices`` limits the work to those rooms of the ``count`` (a worker's share: each room
    depends on its index alone, so rooms made apart equal rooms made in one go)."""
    directory = Path(directory)
    paths = []
    for i in (range(count) if indices is None else indices):
        path = directory / f"room_{i:04d}"
        meta = path / "meta.json"
        m = json.loads(meta.read_text()) if meta.is_file() else {}
        if not (m.get("seed") == room_seed(seed, i) and m.get("generator_version") == GENERATOR_VERSION
                and m.get("points") == points and len(Scene.load(path, check_images=False).views) == views):
            scene = generate_room(room_seed(seed, i), num_points=points, num_views=views)
            scene.meta.update(name=path.name, points=points)
            scene.save(path, image_format="png")
        paths.append(path)
        if on_room is not None:
            on_room()
    return paths
