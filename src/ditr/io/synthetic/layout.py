"""Procedural room layout: a box room with furniture on the floor and flat panels on the walls.

Everything is built from axis-aligned boxes and vertical cylinders ("parts", :mod:`.geometry`), and
furniture is only rotated by multiples of 90 degrees, so every part's bounding box is exact
(cylinders: tight). That makes two things cheap and exact:

* hidden surface: a sampled point that lies inside (or on) the box of another part, such as the
  wall behind a picture, the floor under a rug or a cabinet, or a table leg's top under the table
  top, can never be seen by any camera and is dropped, so that no point sits millimetres behind a
  surface of another class (which a depth-tolerance visibility test could not tell apart);
* faces lying on the room shell (furniture bottoms on the floor, panel backs on a wall) are not
  emitted at all, so the ray caster never meets two coplanar faces.

Placement keeps 0.3 m (``CLEARANCE``) of free floor between items and between every item and the
walls; wall-backed furniture (bed, sofa, cabinet, shelf) faces the room from 0.3 m off its wall.
Occluders then never stand a few centimetres in front of another surface, so what furniture hides
is hidden by more than the 0.2 m depth tolerance of the reference visibility rule. (Flush against
the wall, the strip of wall beside a cabinet's side would be hidden by less than that.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .furniture import FREE_STANDING, WALL_BACKED, hsv_color, panel, rug, wood_colors
from .geometry import Builder, Geometry, Part, emit, item_box
from .textures import Material

#: Class names in id order; wall, floor and ceiling first, then furniture, wall panels and rugs.
CLASS_NAMES = ["wall", "floor", "ceiling", "table", "chair", "bed", "sofa", "cabinet", "shelf", "lamp",
               "door", "window", "picture", "whiteboard", "rug"]
CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}

CLEARANCE = 0.3  # metres of free floor between items, and between items and walls


@dataclass(frozen=True)
class _Wall:
    origin: np.ndarray   # corner the wall coordinate s starts at (x, y)
    along: np.ndarray    # unit direction of s
    normal: np.ndarray   # unit normal into the room
    length: float


def _walls(size: np.ndarray) -> list[_Wall]:
    L, W = size[0], size[1]
    return [_Wall(np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), L),
            _Wall(np.array([L, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]), W),
            _Wall(np.array([L, W]), np.array([-1.0, 0.0]), np.array([0.0, -1.0]), L),
            _Wall(np.array([0.0, W]), np.array([0.0, -1.0]), np.array([1.0, 0.0]), W)]


def _overlaps(rect: np.ndarray, others: list[np.ndarray], gap: float) -> bool:
    """Whether axis-aligned rectangle (lo, hi) comes closer than ``gap`` to any of ``others``."""
    return any(bool(np.all(rect[0] < o[1] + gap) and np.all(o[0] < rect[1] + gap)) for o in others)


# ----------------------------------------------------------------------------- the room
def build_room(rng: np.random.Generator) -> tuple[Geometry, list[tuple[np.ndarray, np.ndarray]]]:
    """Generate one room; returns its geometry and the (lo, hi) boxes of its items (camera targets)."""
    size = np.array([rng.uniform(4.0, 8.0), rng.uniform(3.0, 7.0), rng.uniform(2.5, 3.2)])
    b = Builder(size, rng)
    _shell(b, rng)
    walls = _walls(size)
    items: list[tuple[np.ndarray, np.ndarray]] = []
    floor_rects: list[np.ndarray] = []      # footprints (2, 2) that later floor items keep clear of
    wall_rects: list[list[np.ndarray]] = [[] for _ in walls]  # (s, z) rectangles taken on each wall

    def add_panel(kind: str) -> None:
        placed = _place_panel(kind, b, walls, floor_rects, wall_rects, rng)
        if placed is not None:
            items.append(placed)

    def add_furniture(kind: str) -> None:
        parts = (WALL_BACKED.get(kind) or FREE_STANDING[kind])(rng)
        placed = _place(parts, kind in WALL_BACKED, size, walls, floor_rects, wall_rects, rng)
        if placed is not None:
            emit(b, parts, *placed, cls=CLASS_ID[kind], instance=b.new_instance())
            items.append(item_box(parts, *placed))

    # big wall-backed furniture before the smaller wall panels, so that it finds a wall more often;
    # panels may then hang above it but never behind it
    add_panel("door")
    for kind in (["bed"] * int(rng.random() < 0.75) + ["sofa"] * int(rng.random() < 0.8)
                 + ["cabinet"] * int(rng.integers(1, 3)) + ["shelf"] * int(rng.integers(1, 3))):
        add_furniture(kind)
    for kind in (["window"] * int(rng.integers(1, 3)) + ["whiteboard"] * int(rng.random() < 0.8)
                 + ["picture"] * int(rng.integers(1, 4))):
        add_panel(kind)
    for kind in (["table"] * int(rng.integers(1, 3)) + ["chair"] * int(rng.integers(2, 5))
                 + ["lamp"] * int(rng.integers(1, 3))):
        add_furniture(kind)

    if rng.random() < 0.85:  # rugs lie under furniture; hidden parts are dropped by Geometry.hidden
        parts = rug(rng)
        for _ in range(30):
            front = np.array([[1.0, 0.0], [0.0, 1.0]])[int(rng.integers(2))]
            centre = _free_centre(parts, front, size, rng)
            if centre is None:
                continue
            emit(b, parts, centre, front, cls=CLASS_ID["rug"], instance=b.new_instance())
            items.append(item_box(parts, centre, front))
            break
    return b.finish(), items


def _place_panel(kind: str, b: Builder, walls: list[_Wall], floor_rects: list[np.ndarray],
                 wall_rects: list[list[np.ndarray]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """Hang a panel on a random free stretch of wall; returns its box, or None if none was found."""
    w, h, z0, t, material, ca, cb = panel(kind, rng)
    for _ in range(30):
        k = int(rng.integers(4))
        wall = walls[k]
        if wall.length < w + 2 * CLEARANCE:
            continue
        s0 = rng.uniform(CLEARANCE, wall.length - w - CLEARANCE)
        rect = np.array([[s0, z0], [s0 + w, z0 + h]])
        if _overlaps(rect, wall_rects[k], 0.15):
            continue
        if kind == "door":  # keep the swing area in front of the door free of furniture
            floor_rects.append(_wall_footprint(wall, s0 - 0.1, s0 + w + 0.1, 0.9))
        wall_rects[k].append(rect)
        lo, hi = _wall_box(wall, s0, s0 + w, z0, z0 + h, t)
        b.box(lo, hi, cls=CLASS_ID[kind], instance=b.new_instance(), material=material,
              front=np.array([*wall.normal, 0.0]), color_a=ca, color_b=cb, solid=True)
        return lo, hi
    return None


def _shell(b: Builder, rng: np.random.Generator) -> None:
    """Floor, ceiling and four walls as single quads whose normals point into the room."""
    size = b.size
    plaster = hsv_color(rng, (0.0, 1.0), (0.04, 0.2), (0.78, 0.95))
    if rng.random() < 0.6:
        floor_material, fa, fb = Material.PLANKS, *wood_colors(rng, light=rng.random() < 0.5)
    else:
        floor_material, fa, fb = (Material.TILES, hsv_color(rng, (0.0, 1.0), (0.0, 0.3), (0.55, 0.9)),
                                  hsv_color(rng, (0.0, 1.0), (0.0, 0.3), (0.3, 0.6)))
    zero, up = np.zeros(3), np.array([0.0, 0.0, 1.0])
    entries = [((2, 1), "floor", floor_material, fa, fb, up),
               ((2, -1), "ceiling", Material.CEILING, np.full(3, 0.95), np.full(3, 0.95), -up),
               ((1, 1), "wall", Material.PLASTER, plaster, plaster, np.array([0.0, 1.0, 0.0])),
               ((0, -1), "wall", Material.PLASTER, plaster, plaster, np.array([-1.0, 0.0, 0.0])),
               ((1, -1), "wall", Material.PLASTER, plaster, plaster, np.array([0.0, -1.0, 0.0])),
               ((0, 1), "wall", Material.PLASTER, plaster, plaster, np.array([1.0, 0.0, 0.0]))]
    for (k, s), name, material, ca, cb, normal in entries:
        lo, hi = zero.copy(), size.copy()
        if s > 0:  # the inward normal is +e_k: the face lies on the low side of the room
            hi[k] = 0.0
        else:
            lo[k] = size[k]
        verts, tris = b.quad_faces(lo, hi, [(k, s)])
        b.add_part(verts, tris, lo=lo, hi=hi, cls=CLASS_ID[name], instance=b.new_instance(), material=material,
                    front=normal, color_a=ca, color_b=cb, solid=False)


def _wall_box(wall: _Wall, s0: float, s1: float, z0: float, z1: float, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """3D box covering wall coordinates [s0, s1] x [z0, z1] and reaching ``depth`` into the room."""
    corners = [wall.origin + s * wall.along + d * wall.normal for s in (s0, s1) for d in (0.0, depth)]
    xy = np.array(corners)
    return np.array([*xy.min(0), z0]), np.array([*xy.max(0), z1])


def _wall_footprint(wall: _Wall, s0: float, s1: float, depth: float) -> np.ndarray:
    lo, hi = _wall_box(wall, s0, s1, 0.0, 0.0, depth)
    return np.array([lo[:2], hi[:2]])


def _place(parts: list[Part], wall_backed: bool, size: np.ndarray, walls: list[_Wall], floor_rects: list[np.ndarray],
           wall_rects: list[list[np.ndarray]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """Rejection-sample a free spot; wall-backed items face the room from 0.3 m off a wall, below its panels."""
    w, h = max(p.hi[0] for p in parts) - min(p.lo[0] for p in parts), max(p.hi[2] for p in parts)
    back = min(p.lo[1] for p in parts)
    for _ in range(60):
        if wall_backed:
            k = int(rng.integers(4))
            wall = walls[k]
            if wall.length < w + 2 * CLEARANCE:
                continue
            s = rng.uniform(CLEARANCE + w / 2, wall.length - CLEARANCE - w / 2)
            if _overlaps(np.array([[s - w / 2, 0.0], [s + w / 2, h]]), wall_rects[k], 0.05):
                continue
            centre, front = wall.origin + s * wall.along + (CLEARANCE - back) * wall.normal, wall.normal
        else:
            front = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])[int(rng.integers(4))]
            centre = _free_centre(parts, front, size, rng)
            if centre is None:
                continue
        box_lo, box_hi = item_box(parts, centre, front)
        rect = np.array([box_lo[:2], box_hi[:2]])
        if _overlaps(rect, floor_rects, CLEARANCE):
            continue
        floor_rects.append(rect)
        if wall_backed:
            wall_rects[k].append(np.array([[s - w / 2, 0.0], [s + w / 2, h]]))
        return centre, front
    return None


def _free_centre(parts: list[Part], front: np.ndarray, size: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A random centre keeping the item ``CLEARANCE`` away from every wall, or None if it cannot fit."""
    lo, hi = item_box(parts, np.zeros(2), front)
    low, high = CLEARANCE - lo[:2], size[:2] - CLEARANCE - hi[:2]
    return rng.uniform(low, high) if np.all(low < high) else None
