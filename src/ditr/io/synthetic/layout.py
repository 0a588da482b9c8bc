"""Procedural room layout: a box room with furniture on the floor and flat panels on the walls.

Everything is built from axis-aligned boxes and vertical cylinders ("parts"), and furniture is only
rotated by multiples of 90 degrees, so every part's bounding box is exact (cylinders: tight). That
makes two things cheap and exact:

* hidden surface: a sampled point that lies inside (or on) the box of another part, such as the
  wall behind a picture, the floor under a rug or a cabinet, or a table leg's top under the table
  top, can never be seen by any camera and is dropped, so that no point sits millimetres behind a
  surface of another class (which a depth-tolerance visibility test could not tell apart);
* faces lying on the room shell (furniture bottoms on the floor, panel and cabinet backs against a
  wall) are not emitted at all, so the ray caster never meets two coplanar faces.

Placement keeps 0.3 m of free floor between items and between free-standing items and the walls,
and puts wall-backed furniture flush against its wall: occluders then never stand a few centimetres
in front of another surface, which keeps "hidden behind furniture" unambiguous for visibility tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .textures import Material, hsv_to_rgb

#: Class names in id order; wall, floor and ceiling first, then furniture, wall panels and rugs.
CLASS_NAMES = ["wall", "floor", "ceiling", "table", "chair", "bed", "sofa", "cabinet", "shelf", "lamp",
               "door", "window", "picture", "whiteboard", "rug"]
CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}

CLEARANCE = 0.3  # metres of free floor between items, and between free-standing items and walls
_EPS = 1e-6


@dataclass(frozen=True)
class RoomGeometry:
    """The triangles of one room plus, per part, what the textures and visibility rules need."""

    size: np.ndarray          # (3,) room extent in metres; the room spans [0, size]
    vertices: np.ndarray      # (V, 3) float64
    faces: np.ndarray         # (F, 3) int64
    face_part: np.ndarray     # (F,) part index of every triangle
    part_class: np.ndarray    # (P,) class id
    part_instance: np.ndarray  # (P,) instance id (walls, floor and ceiling are instances too)
    part_material: np.ndarray  # (P,) Material
    part_lo: np.ndarray       # (P, 3) bounding box
    part_hi: np.ndarray
    part_front: np.ndarray    # (P, 3) unit vector the part's front face looks along
    part_color_a: np.ndarray  # (P, 3) colours in [0, 1] the material mixes
    part_color_b: np.ndarray
    part_seed: np.ndarray     # (P,) texture seed
    part_solid: np.ndarray    # (P,) whether the part's box hides surfaces inside it (not the shell)

    @cached_property
    def face_normals(self) -> np.ndarray:
        """Unit normals (outward for furniture, into the room for the shell)."""
        v = self.vertices[self.faces]
        n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        return n / np.linalg.norm(n, axis=1, keepdims=True)

    @cached_property
    def face_areas(self) -> np.ndarray:
        v = self.vertices[self.faces]
        return 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)

    @property
    def face_class(self) -> np.ndarray:
        return self.part_class[self.face_part]

    @property
    def face_instance(self) -> np.ndarray:
        return self.part_instance[self.face_part]

    def hidden(self, points: np.ndarray, part: np.ndarray) -> np.ndarray:
        """Whether each point (on ``part``) lies inside or on the box of another solid part."""
        solid = np.flatnonzero(self.part_solid)
        lo, hi = self.part_lo[solid] - 1e-4, self.part_hi[solid] + 1e-4
        out = np.zeros(len(points), dtype=bool)
        for start in range(0, len(points), 8192):  # bounded memory: chunk x parts x 3
            p = points[start:start + 8192, None, :]
            inside = ((p >= lo) & (p <= hi)).all(axis=2) & (solid[None, :] != part[start:start + 8192, None])
            out[start:start + 8192] = inside.any(axis=1)
        return out


@dataclass
class _Part:
    """A part in an item's local frame (x right, y front, z up; footprint centred on the origin)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    material: Material
    color_a: np.ndarray
    color_b: np.ndarray
    cylinder: bool = False


class _Builder:
    """Accumulates triangles and part records; omits faces that lie on the room shell."""

    def __init__(self, size: np.ndarray, rng: np.random.Generator):
        self.size, self.rng = size, rng
        self.vertices: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.face_part: list[np.ndarray] = []
        self.parts: list[dict] = []
        self.num_vertices = 0
        self.num_instances = 0

    def new_instance(self) -> int:
        self.num_instances += 1
        return self.num_instances - 1

    def _add_part(self, verts: np.ndarray, tris: np.ndarray, **record) -> None:
        self.vertices.append(verts)
        self.faces.append(tris + self.num_vertices)
        self.face_part.append(np.full(len(tris), len(self.parts)))
        self.num_vertices += len(verts)
        self.parts.append(record | {"seed": int(self.rng.integers(2**31))})

    def quad_faces(self, lo: np.ndarray, hi: np.ndarray, sides: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Quads on the faces of box [lo, hi]; side (axis k, sign s) has its normal along s * e_k."""
        verts, tris = [], []
        for k, s in sides:
            a, b = (k + 1) % 3, (k + 2) % 3
            corners = [(0, 0), (1, 0), (1, 1), (0, 1)] if s > 0 else [(0, 0), (0, 1), (1, 1), (1, 0)]
            for ca, cb in corners:  # counter-clockwise seen from the side the normal points to
                v = np.empty(3)
                v[k] = hi[k] if s > 0 else lo[k]
                v[a] = hi[a] if ca else lo[a]
                v[b] = hi[b] if cb else lo[b]
                verts.append(v)
            base = 4 * len(tris) // 2
            tris += [[base, base + 1, base + 2], [base, base + 2, base + 3]]
        return np.array(verts), np.array(tris, dtype=np.int64)

    def box(self, lo: np.ndarray, hi: np.ndarray, **record) -> None:
        """A closed box, minus the faces that lie on (and face into) the room shell."""
        sides = [(k, s) for k in range(3) for s in (-1, 1)
                 if not ((s < 0 and lo[k] <= _EPS) or (s > 0 and hi[k] >= self.size[k] - _EPS))]
        verts, tris = self.quad_faces(lo, hi, sides)
        self._add_part(verts, tris, lo=lo, hi=hi, **record)

    def cylinder(self, lo: np.ndarray, hi: np.ndarray, segments: int = 20, **record) -> None:
        """A vertical cylinder inscribed in box [lo, hi] (bottom cap left out on the floor)."""
        centre, r = (lo[:2] + hi[:2]) / 2, (hi[0] - lo[0]) / 2
        ang = 2 * np.pi * np.arange(segments) / segments
        ring = centre + r * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        bottom = np.column_stack([ring, np.full(segments, lo[2])])
        top = np.column_stack([ring, np.full(segments, hi[2])])
        verts = np.vstack([bottom, top, [[*centre, lo[2]], [*centre, hi[2]]]])
        i = np.arange(segments)
        j = (i + 1) % segments
        tris = [np.stack([i, j, segments + j], 1), np.stack([i, segments + j, segments + i], 1),
                np.stack([np.full(segments, 2 * segments + 1), segments + i, segments + j], 1)]
        if lo[2] > _EPS:
            tris.append(np.stack([np.full(segments, 2 * segments), j, i], 1))
        self._add_part(verts, np.vstack(tris), lo=lo, hi=hi, **record)

    def finish(self) -> RoomGeometry:
        col = {k: np.array([p[k] for p in self.parts]) for k in self.parts[0]}
        return RoomGeometry(
            size=self.size, vertices=np.vstack(self.vertices), faces=np.vstack(self.faces),
            face_part=np.concatenate(self.face_part), part_class=col["cls"].astype(np.int64),
            part_instance=col["instance"].astype(np.int64), part_material=col["material"].astype(np.int64),
            part_lo=col["lo"].astype(np.float64), part_hi=col["hi"].astype(np.float64),
            part_front=col["front"].astype(np.float64), part_color_a=col["color_a"].astype(np.float64),
            part_color_b=col["color_b"].astype(np.float64), part_seed=col["seed"].astype(np.int64),
            part_solid=col["solid"].astype(bool))


# ----------------------------------------------------------------------------- colours
def _hsv(rng: np.random.Generator, h: tuple[float, float], s: tuple[float, float], v: tuple[float, float]) -> np.ndarray:
    return hsv_to_rgb(np.array(rng.uniform(*h)), np.array(rng.uniform(*s)), np.array(rng.uniform(*v)))


def _wood_colors(rng: np.random.Generator, light: bool = False) -> tuple[np.ndarray, np.ndarray]:
    base = _hsv(rng, (0.06, 0.1), (0.35, 0.6), (0.6, 0.8) if light else (0.35, 0.6))
    return base, base * rng.uniform(0.7, 0.82)


def _metal_color(rng: np.random.Generator) -> np.ndarray:
    return np.full(3, rng.uniform(0.2, 0.7))


# ----------------------------------------------------------------------------- furniture
def _table(rng: np.random.Generator) -> list[_Part]:
    w, d, h, t, leg = rng.uniform(1.0, 1.8), rng.uniform(0.7, 1.0), rng.uniform(0.72, 0.78), 0.04, 0.04
    top_a, top_b = _wood_colors(rng)
    legs_a = _metal_color(rng) if rng.random() < 0.5 else top_b
    parts = [_Part((-w / 2, -d / 2, h - t), (w / 2, d / 2, h), Material.WOOD, top_a, top_b)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (w / 2 - 0.05 - leg / 2), sy * (d / 2 - 0.05 - leg / 2)
            parts.append(_Part((x - leg / 2, y - leg / 2, 0.0), (x + leg / 2, y + leg / 2, h - t), Material.METAL, legs_a, legs_a))
    return parts


def _chair(rng: np.random.Generator) -> list[_Part]:
    w, d, seat, t, leg = rng.uniform(0.42, 0.5), rng.uniform(0.42, 0.5), rng.uniform(0.43, 0.48), 0.05, 0.025
    top = seat + rng.uniform(0.38, 0.5)
    cushion = _hsv(rng, (0.0, 1.0), (0.5, 0.85), (0.45, 0.85))
    legs = _metal_color(rng)
    material = Material.PLASTIC if rng.random() < 0.5 else Material.FABRIC
    parts = [_Part((-w / 2, -d / 2, seat - t), (w / 2, d / 2, seat), material, cushion, cushion),
             _Part((-w / 2, -d / 2, seat), (w / 2, -d / 2 + 0.04, top), material, cushion, cushion)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (w / 2 - leg / 2), sy * (d / 2 - leg / 2)
            parts.append(_Part((x - leg / 2, y - leg / 2, 0.0), (x + leg / 2, y + leg / 2, seat - t), Material.METAL, legs, legs))
    return parts


def _bed(rng: np.random.Generator) -> list[_Part]:
    w, d = (rng.uniform(1.4, 1.8) if rng.random() < 0.6 else rng.uniform(0.9, 1.0)), rng.uniform(2.0, 2.15)
    frame_a, frame_b = _wood_colors(rng)
    cover_a = _hsv(rng, (0.0, 1.0), (0.3, 0.7), (0.5, 0.85))
    cover_b = _hsv(rng, (0.0, 1.0), (0.2, 0.5), (0.75, 0.95))
    pillow = _hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.88, 0.97))
    head = rng.uniform(0.75, 0.95)
    return [_Part((-w / 2, -d / 2, 0.0), (w / 2, -d / 2 + 0.06, head), Material.WOOD, frame_a, frame_b),
            _Part((-w / 2, -d / 2 + 0.06, 0.0), (w / 2, d / 2, 0.3), Material.WOOD, frame_a, frame_b),
            _Part((-w / 2 + 0.02, -d / 2 + 0.06, 0.3), (w / 2 - 0.02, d / 2 - 0.02, 0.52), Material.CHECK, cover_a, cover_b),
            _Part((-w / 2 + 0.12, -d / 2 + 0.1, 0.52), (w / 2 - 0.12, -d / 2 + 0.5, 0.64), Material.PILLOW, pillow, pillow)]


def _sofa(rng: np.random.Generator) -> list[_Part]:
    w, d, arm = rng.uniform(1.6, 2.4), rng.uniform(0.8, 0.95), 0.18
    fabric = _hsv(rng, (0.0, 1.0), (0.25, 0.7), (0.3, 0.7))
    back_top, arm_top = rng.uniform(0.78, 0.9), rng.uniform(0.58, 0.66)
    return [_Part((-w / 2, -d / 2, 0.0), (w / 2, d / 2, 0.42), Material.FABRIC, fabric, fabric),
            _Part((-w / 2, -d / 2, 0.42), (w / 2, -d / 2 + 0.22, back_top), Material.FABRIC, fabric, fabric),
            _Part((-w / 2, -d / 2 + 0.22, 0.42), (-w / 2 + arm, d / 2, arm_top), Material.FABRIC, fabric, fabric),
            _Part((w / 2 - arm, -d / 2 + 0.22, 0.42), (w / 2, d / 2, arm_top), Material.FABRIC, fabric, fabric)]


def _box_size(rng: np.random.Generator) -> tuple[float, float, float]:
    """Outer size shared by cabinets and shelves, so only appearance and the open front tell them apart."""
    return rng.uniform(0.6, 1.2), rng.uniform(0.35, 0.55), rng.uniform(0.8, 2.0)


def _cabinet(rng: np.random.Generator) -> list[_Part]:
    w, d, h = _box_size(rng)
    paint = _hsv(rng, (0.0, 1.0), (0.05, 0.45), (0.5, 0.95))
    return [_Part((-w / 2, -d / 2, 0.0), (w / 2, d / 2, h), Material.PAINTED, paint, _metal_color(rng))]


def _shelf(rng: np.random.Generator) -> list[_Part]:
    w, d, h = _box_size(rng)
    # a closed plinth: rays through the open front meet the thin back or sides no lower than this, so the
    # floor behind them is always clearly (> 0.2 m in depth) hidden, never a near miss
    t, plinth = 0.025, 0.25
    wood_a, wood_b = _wood_colors(rng, light=True)
    parts = [_Part((-w / 2, -d / 2, 0.0), (-w / 2 + t, d / 2, h), Material.WOOD, wood_a, wood_b),
             _Part((w / 2 - t, -d / 2, 0.0), (w / 2, d / 2, h), Material.WOOD, wood_a, wood_b),
             _Part((-w / 2 + t, -d / 2, 0.0), (w / 2 - t, -d / 2 + 0.015, h), Material.BOOKS, wood_b, wood_b),
             _Part((-w / 2 + t, -d / 2 + 0.015, h - t), (w / 2 - t, d / 2, h), Material.WOOD, wood_a, wood_b),
             _Part((-w / 2 + t, -d / 2 + 0.015, 0.0), (w / 2 - t, d / 2, plinth), Material.WOOD, wood_a, wood_b)]
    levels = max(0, int(round((h - plinth) / 0.35)) - 1)
    for z in np.linspace(plinth, h - t, levels + 2)[1:-1]:
        parts.append(_Part((-w / 2 + t, -d / 2 + 0.015, z - t / 2), (w / 2 - t, d / 2, z + t / 2), Material.WOOD, wood_a, wood_b))
    return parts


def _lamp(rng: np.random.Generator) -> list[_Part]:
    top, r = rng.uniform(1.45, 1.75), rng.uniform(0.17, 0.24)
    shade = _hsv(rng, (0.08, 0.15), (0.15, 0.4), (0.8, 0.95))
    metal = _metal_color(rng)
    return [_Part((-0.15, -0.15, 0.0), (0.15, 0.15, 0.03), Material.METAL, metal, metal, cylinder=True),
            _Part((-0.015, -0.015, 0.03), (0.015, 0.015, top - 0.32), Material.METAL, metal, metal, cylinder=True),
            _Part((-r, -r, top - 0.32), (r, r, top), Material.SHADE, shade, shade, cylinder=True)]


def _rug(rng: np.random.Generator) -> list[_Part]:
    w, d, t = rng.uniform(1.2, 2.4), rng.uniform(0.8, 1.7), rng.uniform(0.002, 0.004)
    a = _hsv(rng, (0.0, 1.0), (0.45, 0.8), (0.35, 0.7))
    b = _hsv(rng, (0.0, 1.0), (0.3, 0.7), (0.6, 0.9))
    return [_Part((-w / 2, -d / 2, 0.0), (w / 2, d / 2, t), Material.RUG, a, b)]


_WALL_BACKED = {"bed": _bed, "sofa": _sofa, "cabinet": _cabinet, "shelf": _shelf}
_FREE_STANDING = {"table": _table, "chair": _chair, "lamp": _lamp}


# ----------------------------------------------------------------------------- wall panels
def _panel(kind: str, rng: np.random.Generator) -> tuple[float, float, float, float, Material, np.ndarray, np.ndarray]:
    """Width, height, bottom, thickness (a few mm: nearly invisible to geometry), material, colours."""
    thickness = rng.uniform(0.002, 0.005)
    if kind == "door":
        a, b = _wood_colors(rng, light=rng.random() < 0.5)
        return rng.uniform(0.8, 1.0), rng.uniform(2.0, 2.1), 0.0, thickness, Material.DOOR, a, b
    if kind == "window":
        frame = np.full(3, rng.uniform(0.85, 0.97))
        return rng.uniform(0.9, 1.6), rng.uniform(1.0, 1.3), rng.uniform(0.8, 1.0), thickness, Material.WINDOW, frame, frame
    if kind == "picture":
        w, h = rng.uniform(0.4, 1.0), rng.uniform(0.35, 0.8)
        frame = _wood_colors(rng)[1] if rng.random() < 0.5 else np.array([0.75, 0.6, 0.25])
        return w, h, rng.uniform(1.45, 1.7) - h / 2, thickness, Material.PICTURE, np.zeros(3), frame
    if kind == "whiteboard":
        h = rng.uniform(0.9, 1.2)
        return rng.uniform(1.2, 2.0), h, rng.uniform(0.85, 1.0), thickness, Material.WHITEBOARD, np.full(3, 0.97), np.full(3, 0.72)
    raise ValueError(kind)


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
def build_room(rng: np.random.Generator) -> tuple[RoomGeometry, list[tuple[np.ndarray, np.ndarray]]]:
    """Generate one room; returns its geometry and the (lo, hi) boxes of its items (camera targets)."""
    size = np.array([rng.uniform(4.0, 8.0), rng.uniform(3.0, 7.0), rng.uniform(2.5, 3.2)])
    b = _Builder(size, rng)
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
        parts = (_WALL_BACKED.get(kind) or _FREE_STANDING[kind])(rng)
        placed = _place(parts, kind in _WALL_BACKED, size, walls, floor_rects, wall_rects, rng)
        if placed is not None:
            _emit(b, parts, *placed, cls=CLASS_ID[kind], instance=b.new_instance())
            items.append(_item_box(parts, *placed))

    # big wall-backed furniture before the smaller wall panels, so that it finds a wall more often;
    # panels may then hang above it but never behind it
    add_panel("door")
    for kind in ["bed"] * int(rng.random() < 0.75) + ["sofa"] * int(rng.random() < 0.8) + ["cabinet"] * int(rng.integers(1, 3)) + ["shelf"] * int(rng.integers(1, 3)):
        add_furniture(kind)
    for kind in ["window"] * int(rng.integers(1, 3)) + ["whiteboard"] * int(rng.random() < 0.8) + ["picture"] * int(rng.integers(1, 4)):
        add_panel(kind)
    for kind in ["table"] * int(rng.integers(1, 3)) + ["chair"] * int(rng.integers(2, 5)) + ["lamp"] * int(rng.integers(1, 3)):
        add_furniture(kind)

    if rng.random() < 0.85:  # rugs lie under furniture; hidden parts are dropped by RoomGeometry.hidden
        parts = _rug(rng)
        for _ in range(30):
            front = np.array([[1.0, 0.0], [0.0, 1.0]])[int(rng.integers(2))]
            centre = _free_centre(parts, front, size, rng)
            if centre is None:
                continue
            _emit(b, parts, centre, front, cls=CLASS_ID["rug"], instance=b.new_instance())
            items.append(_item_box(parts, centre, front))
            break
    return b.finish(), items


def _place_panel(kind: str, b: _Builder, walls: list[_Wall], floor_rects: list[np.ndarray],
                 wall_rects: list[list[np.ndarray]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """Hang a panel on a random free stretch of wall; returns its box, or None if none was found."""
    w, h, z0, t, material, ca, cb = _panel(kind, rng)
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


def _shell(b: _Builder, rng: np.random.Generator) -> None:
    """Floor, ceiling and four walls as single quads whose normals point into the room."""
    size = b.size
    plaster = _hsv(rng, (0.0, 1.0), (0.04, 0.2), (0.78, 0.95))
    if rng.random() < 0.6:
        floor_material, fa, fb = Material.PLANKS, *_wood_colors(rng, light=rng.random() < 0.5)
    else:
        floor_material, fa, fb = Material.TILES, _hsv(rng, (0.0, 1.0), (0.0, 0.3), (0.55, 0.9)), _hsv(rng, (0.0, 1.0), (0.0, 0.3), (0.3, 0.6))
    zero, up = np.zeros(3), np.array([0.0, 0.0, 1.0])
    entries = [((2, 1), "floor", floor_material, fa, fb, up), ((2, -1), "ceiling", Material.CEILING, np.full(3, 0.95), np.full(3, 0.95), -up),
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
        b._add_part(verts, tris, lo=lo, hi=hi, cls=CLASS_ID[name], instance=b.new_instance(), material=material,
                    front=normal, color_a=ca, color_b=cb, solid=False)


def _wall_box(wall: _Wall, s0: float, s1: float, z0: float, z1: float, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """3D box covering wall coordinates [s0, s1] x [z0, z1] and reaching ``depth`` into the room."""
    corners = [wall.origin + s * wall.along + d * wall.normal for s in (s0, s1) for d in (0.0, depth)]
    xy = np.array(corners)
    return np.array([*xy.min(0), z0]), np.array([*xy.max(0), z1])


def _wall_footprint(wall: _Wall, s0: float, s1: float, depth: float) -> np.ndarray:
    lo, hi = _wall_box(wall, s0, s1, 0.0, 0.0, depth)
    return np.array([lo[:2], hi[:2]])


def _to_world(part: _Part, centre: np.ndarray, front: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World box of a local part for an item centred at ``centre`` whose front looks along ``front``."""
    right = np.array([front[1], -front[0]])
    rot = np.column_stack([right, front])  # local (x, y) -> world (x, y); a rotation by a multiple of 90 deg
    xy = np.array([[part.lo[0], part.lo[1]], [part.hi[0], part.hi[1]]]) @ rot.T + centre
    return np.array([*xy.min(0), part.lo[2]]), np.array([*xy.max(0), part.hi[2]])


def _item_box(parts: list[_Part], centre: np.ndarray, front: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    boxes = [_to_world(p, centre, front) for p in parts]
    return np.min([lo for lo, _ in boxes], axis=0), np.max([hi for _, hi in boxes], axis=0)


def _place(parts: list[_Part], wall_backed: bool, size: np.ndarray, walls: list[_Wall], floor_rects: list[np.ndarray],
           wall_rects: list[list[np.ndarray]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """Rejection-sample a free spot; wall-backed items stand flush against a wall and keep clear of its panels."""
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
        box_lo, box_hi = _item_box(parts, centre, front)
        rect = np.array([box_lo[:2], box_hi[:2]])
        if _overlaps(rect, floor_rects, CLEARANCE):
            continue
        floor_rects.append(rect)
        if wall_backed:
            wall_rects[k].append(np.array([[s - w / 2, 0.0], [s + w / 2, h]]))
        return centre, front
    return None


def _free_centre(parts: list[_Part], front: np.ndarray, size: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A random centre keeping the item ``CLEARANCE`` away from every wall, or None if it cannot fit."""
    lo, hi = _item_box(parts, np.zeros(2), front)
    low, high = CLEARANCE - lo[:2], size[:2] - CLEARANCE - hi[:2]
    return rng.uniform(low, high) if np.all(low < high) else None


def _emit(b: _Builder, parts: list[_Part], centre: np.ndarray, front: np.ndarray, *, cls: int, instance: int) -> None:
    front3 = np.array([*front, 0.0])
    for part in parts:
        lo, hi = _to_world(part, centre, front)
        add = b.cylinder if part.cylinder else b.box
        add(lo, hi, cls=cls, instance=instance, material=part.material, front=front3,
            color_a=part.color_a, color_b=part.color_b, solid=True)
