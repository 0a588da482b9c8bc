"""Procedural room layout: a box room with furniture on the floor and flat panels on the walls.

Everything is built from axis-aligned boxes and vertical cylinders ("parts"), and furniture is only
rotated by multiples of 90 degrees, so every part's bounding box is exact (cylinders: tight). That
makes two things cheap and exact:

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
from functools import cached_property

import numpy as np

from .furniture import FREE_STANDING, WALL_BACKED, Part, panel, rug, hsv_color, wood_colors
from .textures import Material

#: Class names in id order; wall, floor and ceiling first, then furniture, wall panels and rugs.
CLASS_NAMES = ["wall", "floor", "ceiling", "table", "chair", "bed", "sofa", "cabinet", "shelf", "lamp",
               "door", "window", "picture", "whiteboard", "rug"]
CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}

CLEARANCE = 0.3  # metres of free floor between items, and between items and walls
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
        parts = (WALL_BACKED.get(kind) or FREE_STANDING[kind])(rng)
        placed = _place(parts, kind in WALL_BACKED, size, walls, floor_rects, wall_rects, rng)
        if placed is not None:
            _emit(b, parts, *placed, cls=CLASS_ID[kind], instance=b.new_instance())
            items.append(_item_box(parts, *placed))

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

    if rng.random() < 0.85:  # rugs lie under furniture; hidden parts are dropped by RoomGeometry.hidden
        parts = rug(rng)
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


def _shell(b: _Builder, rng: np.random.Generator) -> None:
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


def _to_world(part: Part, centre: np.ndarray, front: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World box of a local part for an item centred at ``centre`` whose front looks along ``front``."""
    right = np.array([front[1], -front[0]])
    rot = np.column_stack([right, front])  # local (x, y) -> world (x, y); a rotation by a multiple of 90 deg
    xy = np.array([[part.lo[0], part.lo[1]], [part.hi[0], part.hi[1]]]) @ rot.T + centre
    return np.array([*xy.min(0), part.lo[2]]), np.array([*xy.max(0), part.hi[2]])


def _item_box(parts: list[Part], centre: np.ndarray, front: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    boxes = [_to_world(p, centre, front) for p in parts]
    return np.min([lo for lo, _ in boxes], axis=0), np.max([hi for _, hi in boxes], axis=0)


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
        box_lo, box_hi = _item_box(parts, centre, front)
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
    lo, hi = _item_box(parts, np.zeros(2), front)
    low, high = CLEARANCE - lo[:2], size[:2] - CLEARANCE - hi[:2]
    return rng.uniform(low, high) if np.all(low < high) else None


def _emit(b: _Builder, parts: list[Part], centre: np.ndarray, front: np.ndarray, *, cls: int, instance: int) -> None:
    front3 = np.array([*front, 0.0])
    for part in parts:
        lo, hi = _to_world(part, centre, front)
        add = b.cylinder if part.cylinder else b.box
        add(lo, hi, cls=cls, instance=instance, material=part.material, front=front3,
            color_a=part.color_a, color_b=part.color_b, solid=True)
