"""Procedural, class-specific surface appearance of the synthetic rooms and streets.

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
    # streets
    ROAD = 18
    ASPHALT = 19
    PAVING = 20
    GRASS = 21
    FACADE = 22
    CAR_PAINT = 23
    CAR_CABIN = 24
    TYRE = 25
    SIGN = 26
    BARK = 27
    FOLIAGE = 28
    CLOTHES = 29


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
    sides = [(1.0 - w[:, k], w[:, k]) for k in range(3)]  # weight of the lower / upper lattice plane per axis
    out = np.zeros(len(p))
    for corner in range(8):
        o = [(corner >> 0) & 1, (corner >> 1) & 1, (corner >> 2) & 1]
        weight = sides[0][o[0]] * sides[1][o[1]] * sides[2][o[2]]
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
    part's extent along them, ``extent`` its full (x, y, z) extent, ``facing`` the cosine between the
    face normal and the part's front direction, ``front`` whether the point lies on the front face.
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
        self.extent = extent
        self.facing = np.einsum("ij,ij->i", n, front)
        self.front = self.facing > 0.9
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


# ----------------------------------------------------------------------------- streets
#: Width of a facade bay and height of a storey (m): facade windows and the streets' pilasters and
#: balconies follow the same grid.
BAY = 3.0
STOREY = 3.0
#: Lanes of a carriageway are about this wide; the road texture draws its lane lines from it.
LANE_WIDTH = 3.25
_WHITE_PAINT = np.array([0.92, 0.92, 0.88])
_YELLOW_PAINT = np.array([0.95, 0.78, 0.2])


def _asphalt(s: Surface) -> np.ndarray:
    """Dark grey with fine grit and large, faint stains (parking strips; the carriageway's base)."""
    return s.color_a * (0.85 + 0.12 * value_noise(s.p, 9.0, s.seed) + 0.1 * fbm(s.p, 0.4, s.seed + 1))[:, None]


def _road(s: Surface) -> np.ndarray:
    """Carriageway along x: asphalt with solid white edge lines, dashed white lane lines and a centre
    line that is dashed white or double solid yellow (per road). Lanes: about LANE_WIDTH wide."""
    c = _asphalt(s)
    width = s.size[:, 1]
    across, along = s.local[:, 1] * width, s.uv[:, 0]
    lanes = np.maximum(1.0, np.round(width / LANE_WIDTH))
    lane = width / lanes
    k = np.round(across / lane)  # nearest lane boundary (0 and lanes: the road's edges)
    off = across - k * lane
    inner = (k > 0) & (k < lanes)
    centre = inner & (2 * k == lanes)
    dashed = (along % 9.0) < 3.0
    double_yellow = hash01(s.seed + 5) < 0.5
    edge_line = ((k == 0) & (off > 0.15) & (off < 0.3)) | ((k == lanes) & (off < -0.15) & (off > -0.3))
    white = edge_line | (inner & ~(centre & double_yellow) & (np.abs(off) < 0.075) & dashed)
    yellow = centre & double_yellow & (np.abs(np.abs(off) - 0.12) < 0.06)
    paint = np.flatnonzero(white)
    c[paint] = _WHITE_PAINT * (0.92 + 0.08 * value_noise(s.p[paint], 7.0, s.seed[paint]))[:, None]
    return np.where(yellow[:, None], _YELLOW_PAINT, c)


def _paving(s: Surface) -> np.ndarray:
    """Sidewalk: concrete slabs with dark joints on top; curb stones (the sides) in ``color_b``."""
    cell = np.floor(s.uv / 0.9)
    tone = 0.9 + 0.12 * hash01(s.seed, cell[:, 0], cell[:, 1])
    c = s.color_a * (tone * (0.95 + 0.08 * value_noise(s.p, 5.0, s.seed)))[:, None]
    c = np.where(((s.uv / 0.9) % 1.0 < 0.03).any(axis=1)[:, None], c * 0.7, c)
    return np.where((s.n[:, 2] > 0.9)[:, None], c, s.color_b * (0.95 + 0.08 * value_noise(s.p, 4.0, s.seed))[:, None])


def _grass(s: Surface) -> np.ndarray:
    c = _mix(s.color_a, s.color_b, fbm(s.p, 0.5, s.seed, octaves=3))
    return c * (0.85 + 0.25 * value_noise(s.p, 12.0, s.seed + 1))[:, None]


def _facade(s: Surface) -> np.ndarray:
    """Building: walls in ``color_a`` with a window in every BAY x STOREY cell (frames ``color_b``,
    glass reflecting a dim sky), a dark roof on top."""
    wall = s.color_a * (0.9 + 0.12 * fbm(s.p, 1.0, s.seed))[:, None]
    h, v = s.local[:, 0] * s.size[:, 0], s.local[:, 1] * s.size[:, 1]
    bays = np.floor(s.size[:, 0] / BAY)
    x = h - (s.size[:, 0] - bays * BAY) / 2  # bays are centred on the face
    across, up = np.abs(x % BAY - BAY / 2), v % STOREY
    window = (x >= 0) & (x < bays * BAY) & (across < 0.7) & (up > 0.9) & (up < 2.4) & (v < s.size[:, 1] - 0.5)
    glass_area = window & (across < 0.62) & (up > 0.98) & (up < 2.32)
    vertical = np.abs(s.n[:, 2]) < 0.1
    c = np.where((vertical & window)[:, None], s.color_b, wall)
    pane = np.flatnonzero(vertical & glass_area)  # noise only where it shows, for speed
    c[pane] = _mix(np.array([0.18, 0.22, 0.28]), np.array([0.45, 0.55, 0.65]),
                   0.6 * fbm(s.p[pane], 0.3, s.seed[pane] + 1) + 0.3 * (up[pane] - 0.9) / 1.5)
    roof = np.flatnonzero(s.n[:, 2] > 0.9)
    c[roof] = 0.32 * (0.85 + 0.2 * value_noise(s.p[roof], 3.0, s.seed[roof] + 2))[:, None]
    return c


def _car_paint(s: Surface) -> np.ndarray:
    """Car body: paint with a dark sill, headlights on the front face, red tail lights on the back."""
    c = s.color_a * (0.95 + 0.08 * value_noise(s.p, 2.0, s.seed))[:, None]
    vertical = np.abs(s.n[:, 2]) < 0.1
    h, v, w, tall = s.local[:, 0] * s.size[:, 0], s.local[:, 1] * s.size[:, 1], s.size[:, 0], s.size[:, 1]
    c = np.where((vertical & (v < 0.12))[:, None], np.full(3, 0.12), c)
    corner = np.minimum(h, w - h)  # distance from the nearer side edge
    lamp = vertical & (v > tall - 0.25) & (v < tall - 0.08) & (corner > 0.08) & (corner < 0.38)
    c = np.where((lamp & (s.facing > 0.9))[:, None], np.array([1.0, 0.97, 0.85]), c)
    return np.where((lamp & (s.facing < -0.9))[:, None], np.array([0.75, 0.08, 0.05]), c)


def _car_cabin(s: Surface) -> np.ndarray:
    """Car cabin: tinted glass (``color_b``) framed by pillars in the body's paint; a painted roof."""
    glass = s.color_b * (0.8 + 0.5 * s.local[:, 1] + 0.2 * fbm(s.p, 0.8, s.seed))[:, None]
    pillar = s.border(0.07) | ((np.abs(s.facing) < 0.1) & (np.abs(s.local[:, 0] - 0.5) * s.size[:, 0] < 0.05))
    pane = (np.abs(s.n[:, 2]) < 0.5) & ~pillar
    return np.where(pane[:, None], np.minimum(glass, 1.0), s.color_a)


def _tyre(s: Surface) -> np.ndarray:
    """Wheel: black rubber; on the caps (the faces across the axle) a metal rim in ``color_b``."""
    axle = np.argmin(s.extent, axis=1)
    cap = np.abs(s.n[np.arange(len(s.p)), axle]) > 0.9
    radius = np.hypot(*((s.local - 0.5) * s.size).T)
    rim = cap & (radius < 0.55 * 0.5 * s.size[:, 0])
    return np.where(rim[:, None], s.color_b, s.color_a * (0.9 + 0.2 * value_noise(s.p, 20.0, s.seed))[:, None])


def _sign(s: Surface) -> np.ndarray:
    """Traffic sign plate: on the front one of three designs (per sign): a red-ringed white disc, a
    blue disc with a white bar, a yellow diamond with a black border; grey metal (``color_b``) elsewhere."""
    q = (s.local - 0.5) * s.size
    r = np.hypot(q[:, 0], q[:, 1]) / (0.5 * s.size.min(axis=1))
    diamond = (np.abs(q[:, 0]) + np.abs(q[:, 1])) / (0.5 * s.size.min(axis=1))
    style = np.floor(hash01(s.seed + 9) * 3)
    ring = np.where((r < 0.78)[:, None], np.full(3, 0.95), np.array([0.8, 0.1, 0.1]))
    blue = np.where(((np.abs(q[:, 1]) < 0.04) & (np.abs(q[:, 0]) < 0.18))[:, None], np.full(3, 0.95),
                    np.array([0.1, 0.3, 0.75]))
    warn = np.where((diamond < 0.85)[:, None], np.array([0.98, 0.8, 0.1]), np.full(3, 0.08))
    face = np.where((style == 0)[:, None], ring, np.where((style == 1)[:, None], blue, warn))
    painted = s.front & np.where(style == 2, diamond < 1.0, r < 1.0)
    return np.where(painted[:, None], face, s.color_b)


def _bark(s: Surface) -> np.ndarray:
    return s.color_a * (0.7 + 0.4 * value_noise(s.p * np.array([6.0, 6.0, 0.8]), 1.0, s.seed))[:, None]


def _foliage(s: Surface) -> np.ndarray:
    """Leaves: clumps of two greens (``color_a``, ``color_b``) with finer light and shade."""
    c = _mix(s.color_a, s.color_b, fbm(s.p, 1.2, s.seed, octaves=3))
    return c * (0.75 + 0.35 * value_noise(s.p, 7.0, s.seed + 1))[:, None]


def _clothes(s: Surface) -> np.ndarray:
    """Pedestrian body: a top (``color_a``) over trousers (``color_b``)."""
    upper = (s.local[:, 1] > 0.47) | (s.n[:, 2] > 0.5)
    return np.where(upper[:, None], s.color_a, s.color_b) * (0.9 + 0.15 * fbm(s.p, 8.0, s.seed))[:, None]


def sky_color(directions: np.ndarray) -> np.ndarray:
    """uint8 RGB of the sky seen along world ``directions`` (R, 3): pale at the horizon, blue above."""
    up = np.clip(directions[:, 2] / np.linalg.norm(directions, axis=1), 0.0, 1.0)
    rgb = _mix(np.array([0.85, 0.9, 0.95]), np.array([0.35, 0.55, 0.85]), up ** 0.6)
    return np.round(rgb * 255.0).astype(np.uint8)


_MATERIALS: dict[Material, Callable[[Surface], np.ndarray]] = {
    Material.PLASTER: _plaster, Material.CEILING: _ceiling, Material.PLANKS: _planks, Material.TILES: _tiles,
    Material.WOOD: _wood, Material.METAL: _metal, Material.FABRIC: _fabric, Material.PLASTIC: _plastic,
    Material.CHECK: _check, Material.PILLOW: _pillow, Material.PAINTED: _painted, Material.BOOKS: _books,
    Material.SHADE: _shade, Material.DOOR: _door, Material.WINDOW: _window, Material.PICTURE: _picture,
    Material.WHITEBOARD: _whiteboard, Material.RUG: _rug, Material.ROAD: _road, Material.ASPHALT: _asphalt,
    Material.PAVING: _paving, Material.GRASS: _grass, Material.FACADE: _facade, Material.CAR_PAINT: _car_paint,
    Material.CAR_CABIN: _car_cabin, Material.TYRE: _tyre, Material.SIGN: _sign, Material.BARK: _bark,
    Material.FOLIAGE: _foliage, Material.CLOTHES: _clothes,
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
