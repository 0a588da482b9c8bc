"""Procedural, class-specific surface appearance of the synthetic rooms.

One function, :func:`surface_color`, turns 3D surface points (plus the triangle each lies on) into
shaded RGB. The renderer calls it on ray hits and the point sampler on sampled points, so a point's
colour is exactly what a camera sees at that spot. Shading is Lambertian with a fixed light and an
ambient term, hence view-independent: no highlights that would make pixels and points disagree.

Textures are chosen so that appearance separates classes the geometry cannot: a picture, a window,
a whiteboard and a door are all flat panels a few millimetres proud of a wall, and a rug is a few
millimetres of floor; only their colours and patterns (frames, glass, wood grain, borders) differ.
Everything is computed vectorised from position, face normal and the part's bounding box; pattern
periods stay at centimetres or more so that one sample per pixel does not alias badly.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .geometry import Geometry

LIGHT_DIRECTION = np.array([0.35, 0.25, 0.9]) / np.linalg.norm([0.35, 0.25, 0.9])
AMBIENT = 0.6
DIFFUSE = 0.4


class Material(IntEnum):
    """Surface kinds; several classes share one (e.g. METAL legs), each part picks its own colours."""

    PLASTER = 0
    CEILING = 1
    PLANKS = 2
    TILES = 3
    WOOD = 4
    METAL = 5
    FABRIC = 6
    PLASTIC = 7
    CHECK = 8
    PILLOW = 9
    PAINTED = 10
    BOOKS = 11
    SHADE = 12
    DOOR = 13
    WINDOW = 14
    PICTURE = 15
    WHITEBOARD = 16
    RUG = 17


# ----------------------------------------------------------------------------- noise
_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)
_PRIMES = (np.uint32(0x9E3779B1), np.uint32(0x85EBCA77), np.uint32(0xC2B2AE3D), np.uint32(0x27D4EB2F))


def hash01(seed: np.ndarray | int, *coords: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) from integer lattice coordinates (lowbias32 mix)."""
    h = (np.asarray(seed, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)
    for k, c in enumerate(coords):
        h = h ^ ((np.asarray(c, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32) * _PRIMES[k % 4])
        h ^= h >> np.uint32(16)
        h *= _M1
        h ^= h >> np.uint32(15)
        h *= _M2
        h ^= h >> np.uint32(16)
    return h.astype(np.float64) / 4294967296.0


def value_noise(p: np.ndarray, frequency: float, seed: np.ndarray | int) -> np.ndarray:
    """Smooth 3D value noise in [0, 1): random values on a lattice, interpolated with smoothstep."""
    q = p * frequency
    i = np.floor(q).astype(np.int64)
    f = q - i
    w = f * f * (3.0 - 2.0 * f)
    out = np.zeros(len(p))
    for corner in range(8):
        o = np.array([(corner >> 0) & 1, (corner >> 1) & 1, (corner >> 2) & 1])
        weight = np.prod(np.where(o, w, 1.0 - w), axis=1)
        out += weight * hash01(seed, i[:, 0] + o[0], i[:, 1] + o[1], i[:, 2] + o[2])
    return out


def fbm(p: np.ndarray, frequency: float, seed: np.ndarray | int, octaves: int = 2) -> np.ndarray:
    """A few octaves of value noise, normalised to [0, 1)."""
    total, norm, amp = np.zeros(len(p)), 0.0, 1.0
    for o in range(octaves):
        total += amp * value_noise(p, frequency * 2.0**o, np.asarray(seed) + 7919 * o)
        norm += amp
        amp *= 0.5
    return total / norm


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB (all in [0, 1]); used for per-cell random colours (books, paintings)."""
    h6 = (np.asarray(h, dtype=np.float64) % 1.0) * 6.0
    c = v * s
    x = c * (1.0 - np.abs(h6 % 2.0 - 1.0))
    zero = np.zeros_like(h6)
    sector = np.floor(h6).astype(int) % 6
    r = np.choose(sector, [c, x, zero, zero, x, c])
    g = np.choose(sector, [x, c, c, x, zero, zero])
    b = np.choose(sector, [zero, zero, x, c, c, x])
    return np.stack([r, g, b], axis=-1) + (v - c)[..., None]


# ----------------------------------------------------------------------------- surface frame
class Surface:
    """Per-point quantities the materials need, for the subset of points that share one material.

    ``uv`` are world-metre coordinates in the face plane (horizontal first for walls), ``local`` the
    same two axes normalised to the part's bounding box (0..1, for frames and panels), ``size`` the
    part's extent along them, ``front`` whether the point lies on the part's front face.
    """

    def __init__(self, p: np.ndarray, n: np.ndarray, lo: np.ndarray, hi: np.ndarray, front: np.ndarray,
                 color_a: np.ndarray, color_b: np.ndarray, seed: np.ndarray):
        axis = np.argmax(np.abs(n), axis=1)
        # in-plane axes: floor/ceiling (x, y); faces normal to x: (y, z); normal to y: (x, z)
        plane_axes = np.array([[1, 2], [0, 2], [0, 1]])[axis]
        extent = np.maximum(hi - lo, 1e-9)
        rows = np.arange(len(p))[:, None]
        self.p, self.n = p, n
        self.uv = p[rows, plane_axes]
        self.local = ((p - lo) / extent)[rows, plane_axes]
        self.size = extent[rows, plane_axes]
        self.front = np.einsum("ij,ij->i", n, front) > 0.9
        self.color_a, self.color_b, self.seed = color_a, color_b, seed

    def border(self, width_m: float | np.ndarray) -> np.ndarray:
        """Whether a point lies within ``width_m`` metres of its part's outline (in the face plane)."""
        d = np.minimum(self.local, 1.0 - self.local) * self.size
        return (d < np.asarray(width_m)[..., None]).any(axis=1)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * np.asarray(t)[:, None]


def _plaster(s: Surface) -> np.ndarray:
    return s.color_a * (0.93 + 0.1 * fbm(s.p, 2.5, s.seed))[:, None]


def _ceiling(s: Surface) -> np.ndarray:
    return s.color_a * (0.97 + 0.04 * value_noise(s.p, 4.0, s.seed))[:, None]


def _planks(s: Surface) -> np.ndarray:
    width, length = 0.16, 1.2
    row = np.floor(s.uv[:, 1] / width)
    offset = hash01(s.seed, row) * length
    col = np.floor((s.uv[:, 0] + offset) / length)
    tone = hash01(s.seed + 1, row, col)
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (s.uv[:, 1] * 30.0 + 4.0 * value_noise(s.p, 1.5, s.seed + 2)))
    c = _mix(s.color_a, s.color_b, 0.6 * tone + 0.4 * grain)
    seam = ((s.uv[:, 1] / width) % 1.0 < 0.06) | (((s.uv[:, 0] + offset) / length) % 1.0 < 0.01)
    return np.where(seam[:, None], c * 0.55, c)


def _tiles(s: Surface) -> np.ndarray:
    size = 0.45
    cell = np.floor(s.uv / size)
    checker = (cell[:, 0] + cell[:, 1]) % 2
    c = _mix(s.color_a, s.color_b, checker) * (0.95 + 0.08 * value_noise(s.p, 6.0, s.seed))[:, None]
    grout = ((s.uv / size) % 1.0 < 0.04).any(axis=1)
    return np.where(grout[:, None], np.array([0.78, 0.78, 0.75]), c)


def _wood(s: Surface) -> np.ndarray:
    along = np.where(s.size[:, 0] >= s.size[:, 1], s.uv[:, 1], s.uv[:, 0])  # stripes run along the long side
    rings = np.sin(2 * np.pi * (along * 14.0 + 2.5 * value_noise(s.p, 2.0, s.seed)))
    return _mix(s.color_a, s.color_b, 0.5 + 0.5 * rings)


def _metal(s: Surface) -> np.ndarray:
    return s.color_a * (0.9 + 0.15 * s.local[:, 1])[:, None]


def _fabric(s: Surface) -> np.ndarray:
    return s.color_a * (0.82 + 0.22 * fbm(s.p, 14.0, s.seed))[:, None]


def _plastic(s: Surface) -> np.ndarray:
    return s.color_a * (0.97 + 0.05 * value_noise(s.p, 3.0, s.seed))[:, None]


def _check(s: Surface) -> np.ndarray:
    bands = ((s.uv / 0.12) % 1.0 < 0.5).astype(np.float64)
    t = 0.5 * (bands[:, 0] + bands[:, 1])  # tartan: both bands, one band or none -> three tones
    return _mix(s.color_a, s.color_b, t) * (0.92 + 0.1 * value_noise(s.p, 10.0, s.seed))[:, None]


def _pillow(s: Surface) -> np.ndarray:
    return s.color_a * (0.93 + 0.07 * value_noise(s.p, 8.0, s.seed))[:, None]


def _painted(s: Surface) -> np.ndarray:
    """Painted cabinet: plain sides, door gaps and round handles on the front."""
    c = s.color_a * (0.97 + 0.04 * value_noise(s.p, 3.0, s.seed))[:, None]
    doors = np.maximum(1, np.round(s.size[:, 0] / 0.5))
    x = s.local[:, 0] * doors
    gap = (np.abs(x - np.round(x)) * s.size[:, 0] / doors < 0.006) | s.border(0.012)
    handle_x = (np.floor(x) + np.where(np.floor(x) % 2 == 0, 0.85, 0.15)) / doors
    dist = np.hypot((s.local[:, 0] - handle_x) * s.size[:, 0], (s.local[:, 1] - 0.75) * s.size[:, 1])
    c = np.where((s.front & gap)[:, None], c * 0.45, c)
    return np.where((s.front & (dist < 0.025))[:, None], s.color_b, c)


def _books(s: Surface) -> np.ndarray:
    """Back panel of a shelf: rows of book spines in random saturated colours."""
    row = np.floor(s.local[:, 1] * np.maximum(1, np.round(s.size[:, 1] / 0.35)))
    spine = np.floor((s.uv[:, 0] + hash01(s.seed, row) * 0.1) / 0.035)
    h = hash01(s.seed + 3, row, spine)
    rgb = hsv_to_rgb(h, 0.45 + 0.4 * hash01(s.seed + 4, row, spine), 0.35 + 0.5 * hash01(s.seed + 5, row, spine))
    return np.where(s.front[:, None], rgb, s.color_a)


def _shade(s: Surface) -> np.ndarray:
    return np.minimum(1.0, s.color_a * 1.25)


def _door(s: Surface) -> np.ndarray:
    """Wooden door: vertical grain, two recessed panels outlined in dark lines, a metal handle."""
    grain = np.sin(2 * np.pi * (s.uv[:, 0] * 18.0 + 3.0 * value_noise(s.p, 1.2, s.seed)))
    c = _mix(s.color_a, s.color_b, 0.5 + 0.4 * grain)
    lx, ly = s.local[:, 0], s.local[:, 1]
    panel_lo = (np.abs(lx - 0.5) < 0.32) & (np.abs(ly - 0.27) < 0.19)
    panel_hi = (np.abs(lx - 0.5) < 0.32) & (np.abs(ly - 0.72) < 0.2)
    inner = (np.abs(lx - 0.5) < 0.30) & ((np.abs(ly - 0.27) < 0.175) | (np.abs(ly - 0.72) < 0.185))
    c = np.where(((panel_lo | panel_hi) & ~inner & s.front)[:, None], c * 0.55, c)
    handle = np.hypot((lx - 0.86) * s.size[:, 0], (ly - 0.47) * s.size[:, 1]) < 0.035
    return np.where((handle & s.front)[:, None], np.array([0.75, 0.72, 0.6]), c)


def _window(s: Surface) -> np.ndarray:
    """White frame with a mullion cross; sky-blue glass with a vertical gradient and faint clouds."""
    sky = _mix(np.array([0.55, 0.72, 0.92]), np.array([0.25, 0.45, 0.8]), s.local[:, 1])
    sky = sky + 0.25 * np.clip(fbm(s.p, 3.0, s.seed) - 0.55, 0.0, 1.0)[:, None]
    mullion = ((np.abs(s.local[:, 0] - 0.5) * s.size[:, 0] < 0.025)
               | (np.abs(s.local[:, 1] - 0.55) * s.size[:, 1] < 0.025))
    frame = s.border(0.06) | mullion | ~s.front
    return np.where(frame[:, None], s.color_a, np.minimum(sky, 1.0))


def _picture(s: Surface) -> np.ndarray:
    """A framed abstract painting: smooth blobs of three random colours inside a dark or gilt frame."""
    palette_h = hash01(s.seed, np.arange(3)[:, None] + np.zeros(len(s.p), dtype=np.int64)[None])
    t = fbm(s.p, 4.0, s.seed + 11, octaves=3)
    k = np.clip((t * 3.0).astype(int), 0, 2)
    h = np.take_along_axis(palette_h, k[None], axis=0)[0]
    canvas = hsv_to_rgb(h, np.full(len(h), 0.75), 0.55 + 0.4 * fbm(s.p, 7.0, s.seed + 13))
    frame = s.border(0.05) | ~s.front
    return np.where(frame[:, None], s.color_b, canvas)


def _whiteboard(s: Surface) -> np.ndarray:
    """White board in an aluminium frame with a few rows of marker scribbles."""
    lx, ly = s.local[:, 0], s.local[:, 1]
    row = np.floor(ly * 6.0)
    in_row = (np.abs((ly * 6.0) % 1.0 - 0.5) < 0.08) & (row >= 2) & (row <= 4)
    words = value_noise(np.stack([lx * 12.0, row, np.zeros_like(lx)], axis=1), 1.0, s.seed) > 0.45
    used = lx < 0.25 + 0.6 * hash01(s.seed, row)
    ink = np.where((hash01(s.seed + 1, row) > 0.5)[:, None], np.array([0.15, 0.25, 0.75]), np.array([0.8, 0.15, 0.15]))
    c = np.where((in_row & words & used & (lx > 0.08))[:, None], ink, s.color_a)
    return np.where((s.border(0.025) | ~s.front)[:, None], s.color_b, c)


def _rug(s: Surface) -> np.ndarray:
    """Woven rug: a contrasting border band and a diamond lattice in the field."""
    lat = (s.uv / 0.3) % 1.0
    diamond = (np.abs(lat - 0.5).sum(axis=1) < 0.3)
    field = np.where(diamond[:, None], 0.5 * (s.color_a + s.color_b), s.color_a)
    c = np.where(s.border(0.12)[:, None], s.color_b, field)
    return c * (0.9 + 0.15 * value_noise(s.p, 25.0, s.seed))[:, None]


_MATERIALS: dict[Material, Callable[[Surface], np.ndarray]] = {
    Material.PLASTER: _plaster, Material.CEILING: _ceiling, Material.PLANKS: _planks, Material.TILES: _tiles,
    Material.WOOD: _wood, Material.METAL: _metal, Material.FABRIC: _fabric, Material.PLASTIC: _plastic,
    Material.CHECK: _check, Material.PILLOW: _pillow, Material.PAINTED: _painted, Material.BOOKS: _books,
    Material.SHADE: _shade, Material.DOOR: _door, Material.WINDOW: _window, Material.PICTURE: _picture,
    Material.WHITEBOARD: _whiteboard, Material.RUG: _rug,
}
_UNLIT = {Material.SHADE}  # a lamp shade glows: ignore the light direction


def surface_color(geometry: Geometry, points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Shaded uint8 RGB of surface ``points`` (N, 3) lying on triangles ``faces`` (N,) of the room.

    The single source of colour for both the rendered pixels and the sampled points.
    """
    points = np.asarray(points, dtype=np.float64)
    part = geometry.face_part[faces]
    normal = geometry.face_normals[faces]
    material = geometry.part_material[part]
    rgb = np.zeros((len(points), 3))
    for m in np.unique(material):
        idx = np.flatnonzero(material == m)
        pi = part[idx]
        surface = Surface(points[idx], normal[idx], geometry.part_lo[pi], geometry.part_hi[pi], geometry.part_front[pi],
                          geometry.part_color_a[pi], geometry.part_color_b[pi], geometry.part_seed[pi])
        albedo = _MATERIALS[Material(m)](surface)
        light = (1.0 if Material(m) in _UNLIT
                 else AMBIENT + DIFFUSE * np.clip(normal[idx] @ LIGHT_DIRECTION, 0.0, None)[:, None])
        rgb[idx] = albedo * light
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
