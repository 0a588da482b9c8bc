"""Triangle geometry shared by the synthetic rooms and streets: parts built from boxes and cylinders.

A scene is a list of *parts*, each an axis-aligned box or a cylinder along a coordinate axis, with a
class, an instance, a material and colours. Items (a table, a car, a tree) are lists of :class:`Part`
in a local frame and are turned only by multiples of 90 degrees, so every part's bounding box is
exact. That makes the textures (which work in the part's box) and the rooms' hidden-surface test
cheap and exact.

The scene spans ``[0, size]``: a room's shell (floor, walls, ceiling) lies on that box, and faces of
parts that lie on it (a cabinet's bottom on the floor, a picture's back on a wall) are not emitted, so
the ray caster never meets two coplanar faces. A street puts its road at z = 0 and keeps everything
else inside the box, so there only the bottoms standing on the road are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .textures import Material

_EPS = 1e-6


@dataclass
class Part:
    """A part in an item's local frame (x right, y front, z up; footprint centred on the origin).

    A cylinder is inscribed in the box along local ``axis`` (2: vertical, 0: along x, e.g. a wheel).
    """

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    material: Material
    color_a: np.ndarray
    color_b: np.ndarray
    cylinder: bool = False
    axis: int = 2


@dataclass(frozen=True)
class Geometry:
    """The triangles of one scene plus, per part, what the textures and visibility rules need."""

    size: np.ndarray          # (3,) extent in metres; the scene spans [0, size]
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
    part_solid: np.ndarray    # (P,) whether the part's box hides surfaces inside it (not a room's shell)

    @cached_property
    def face_normals(self) -> np.ndarray:
        """Unit normals (outward for parts, into the room for a room's shell)."""
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


class Builder:
    """Accumulates triangles and part records; omits faces that lie on the boundary of ``[0, size]``."""

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

    def add_part(self, verts: np.ndarray, tris: np.ndarray, **record) -> None:
        """Append raw triangles (indices into ``verts``) as one part described by ``record``."""
        self.vertices.append(verts)
        self.faces.append(tris + self.num_vertices)
        self.face_part.append(np.full(len(tris), len(self.parts)))
        self.num_vertices += len(verts)
        self.parts.append(record | {"seed": int(self.rng.integers(2**31))})

    def quad_faces(self, lo: np.ndarray, hi: np.ndarray, sides: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Quads on the faces of box [lo, hi]; side (axis k, sign s) has its normal along s * e_k."""
        verts: list[np.ndarray] = []
        tris: list[list[int]] = []
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
        """A closed box, minus the faces that lie on (and face into) the boundary of the scene."""
        sides = [(k, s) for k in range(3) for s in (-1, 1)
                 if not ((s < 0 and lo[k] <= _EPS) or (s > 0 and hi[k] >= self.size[k] - _EPS))]
        verts, tris = self.quad_faces(lo, hi, sides)
        self.add_part(verts, tris, lo=lo, hi=hi, **record)

    def cylinder(self, lo: np.ndarray, hi: np.ndarray, segments: int = 20, axis: int = 2, **record) -> None:
        """A cylinder along world ``axis`` inscribed in box [lo, hi] (a vertical one's bottom cap is
        left out on the floor).

        It is built vertically in a frame whose coordinates are a cyclic permutation of the world's
        (so handedness, hence the outward winding, is kept) and then permuted into place.
        """
        order = [(axis + 1) % 3, (axis + 2) % 3, axis]  # frame (p, q, h) <- world axes
        flo, fhi = lo[order], hi[order]
        centre, r = (flo[:2] + fhi[:2]) / 2, (fhi[0] - flo[0]) / 2
        ang = 2 * np.pi * np.arange(segments) / segments
        ring = centre + r * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        bottom = np.column_stack([ring, np.full(segments, flo[2])])
        top = np.column_stack([ring, np.full(segments, fhi[2])])
        frame = np.vstack([bottom, top, [[*centre, flo[2]], [*centre, fhi[2]]]])
        i = np.arange(segments)
        j = (i + 1) % segments
        tris = [np.stack([i, j, segments + j], 1), np.stack([i, segments + j, segments + i], 1),
                np.stack([np.full(segments, 2 * segments + 1), segments + i, segments + j], 1)]
        if axis != 2 or lo[2] > _EPS:
            tris.append(np.stack([np.full(segments, 2 * segments), j, i], 1))
        verts = np.empty_like(frame)
        verts[:, order] = frame
        self.add_part(verts, np.vstack(tris), lo=lo, hi=hi, **record)

    def finish(self) -> Geometry:
        col = {k: np.array([p[k] for p in self.parts]) for k in self.parts[0]}
        return Geometry(
            size=self.size, vertices=np.vstack(self.vertices), faces=np.vstack(self.faces),
            face_part=np.concatenate(self.face_part), part_class=col["cls"].astype(np.int64),
            part_instance=col["instance"].astype(np.int64), part_material=col["material"].astype(np.int64),
            part_lo=col["lo"].astype(np.float64), part_hi=col["hi"].astype(np.float64),
            part_front=col["front"].astype(np.float64), part_color_a=col["color_a"].astype(np.float64),
            part_color_b=col["color_b"].astype(np.float64), part_seed=col["seed"].astype(np.int64),
            part_solid=col["solid"].astype(bool))


def to_world(part: Part, centre: np.ndarray, front: np.ndarray, base: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """World box of a local part for an item centred at ``centre`` (x, y), standing at height ``base``,
    whose front looks along ``front`` (a unit vector along x or y)."""
    right = np.array([front[1], -front[0]])
    rot = np.column_stack([right, front])  # local (x, y) -> world (x, y); a rotation by a multiple of 90 deg
    xy = np.array([[part.lo[0], part.lo[1]], [part.hi[0], part.hi[1]]]) @ rot.T + centre
    return np.array([*xy.min(0), part.lo[2] + base]), np.array([*xy.max(0), part.hi[2] + base])


def item_box(parts: list[Part], centre: np.ndarray, front: np.ndarray,
             base: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box of all parts of an item."""
    boxes = [to_world(p, centre, front, base) for p in parts]
    return np.min([lo for lo, _ in boxes], axis=0), np.max([hi for _, hi in boxes], axis=0)


def emit(b: Builder, parts: list[Part], centre: np.ndarray, front: np.ndarray, *, cls: int, instance: int,
         base: float = 0.0) -> None:
    """Add the parts of one item, placed and turned, as solid parts of class ``cls``."""
    front3 = np.array([*front, 0.0])
    right = np.array([front[1], -front[0]])
    for part in parts:
        lo, hi = to_world(part, centre, front, base)
        record: dict[str, Any] = dict(cls=cls, instance=instance, material=part.material, front=front3,
                                      color_a=part.color_a, color_b=part.color_b, solid=True)
        if not part.cylinder:
            b.box(lo, hi, **record)
            continue
        # a turn by a multiple of 90 degrees maps local x and y onto world x or y
        axis = 2 if part.axis == 2 else int(np.argmax(np.abs(right if part.axis == 0 else front)))
        b.cylinder(lo, hi, axis=axis, **record)
