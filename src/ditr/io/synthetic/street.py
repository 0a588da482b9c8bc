"""Procedural street layout: a straight road with parking, curbs and sidewalks, buildings, cars, street
lights, traffic signs, trees, hedges and pedestrians.

The street runs along x through the middle of the scene box (:data:`SIZE`); the road surface is the
plane z = 0 and sidewalks, front yards (terrain) and everything standing on them sit on the curb's
height. Traffic keeps to the right: lanes on the -y side drive towards +x. Like the rooms
(:mod:`.layout`), everything is a box or a cylinder along a coordinate axis, turned by multiples of
90 degrees; unlike the rooms, nothing here samples surface points, so parts may interpenetrate
(a car's wheels reach into its body, a trunk into its crown): the LiDAR and the cameras only ever
see the first surface along a ray.

The ego car, which carries the sensors, is not modelled (datasets drop the returns from it); the
layout only keeps its footprint free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .furniture import hsv_color
from .geometry import Builder, Geometry, Part, emit
from .textures import BAY, LANE_WIDTH, STOREY, Material

#: Class names in id order.
CLASS_NAMES = ["road", "sidewalk", "building", "car", "pole", "traffic-sign", "vegetation", "trunk", "terrain",
               "pedestrian"]
CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}
#: LiDAR reflectivity of each class in [0, 1] (signs are retro-reflective); see :func:`.lidar.intensity`.
REFLECTIVITY = np.array([0.12, 0.3, 0.3, 0.45, 0.4, 0.95, 0.45, 0.25, 0.4, 0.25])

#: Scene box (m): 200 m of street along x, 60 m to either side of its centre line, up to 60 m high.
SIZE = np.array([200.0, 120.0, 60.0])
#: Half length and half width (m) of the ego car's footprint, kept free of other cars.
EGO_HALF_SIZE = np.array([2.5, 1.0])


@dataclass(frozen=True)
class Street:
    """A street's geometry and where the ego car stands: ``ego`` (x, y) on the road, ``heading`` (rad, from +x)."""

    geometry: Geometry
    ego: np.ndarray
    heading: float


@dataclass(frozen=True)
class _Side:
    """One side of the street (``sign`` -1: y < centre, +1: y > centre); distances run outwards from the centre line."""

    sign: int
    curb: float       # distance of the curb (road edge) from the centre line
    sidewalk: float   # sidewalk width
    parking: float    # parking strip width (0: none)

    def y(self, d: float | np.ndarray) -> float | np.ndarray:
        return SIZE[1] / 2 + self.sign * d

    def box(self, x0: float, x1: float, d0: float, d1: float, z0: float, z1: float) -> tuple[np.ndarray, np.ndarray]:
        """World box spanning x0..x1, outward distances d0..d1 from the centre line, heights z0..z1."""
        y0, y1 = sorted((float(self.y(d0)), float(self.y(d1))))
        return np.array([x0, y0, z0]), np.array([x1, y1, z1])


class _Occupancy:
    """Discs (centre, radius) on the ground that items keep apart, so poles, trunks and people never overlap."""

    def __init__(self) -> None:
        self.discs: list[tuple[np.ndarray, float]] = []

    def take(self, centre: np.ndarray, radius: float) -> bool:
        if any(np.linalg.norm(centre - c) < radius + r for c, r in self.discs):
            return False
        self.discs.append((centre, radius))
        return True


def build_street(rng: np.random.Generator) -> Street:
    """Generate one street from ``rng``."""
    b = Builder(SIZE, rng)
    lanes = 1 if rng.random() < 0.6 else 2  # per direction
    lane_w = rng.uniform(LANE_WIDTH - 0.25, LANE_WIDTH + 0.25)
    half = lanes * lane_w
    curb_h = rng.uniform(0.12, 0.18)
    sides = []
    for sign in (-1, 1):
        parking = rng.uniform(2.0, 2.5) if rng.random() < 0.85 else 0.0
        sides.append(_Side(sign, half + parking, rng.uniform(2.5, 4.5), parking))
    _ground(b, rng, sides, half, curb_h)
    occupied = _Occupancy()
    heading = float(np.radians(rng.uniform(-2.0, 2.0)))
    ego_lane = int(rng.integers(lanes))
    ego = np.array([SIZE[0] / 2 + rng.uniform(-8.0, 8.0), SIZE[1] / 2 - (ego_lane + 0.5) * lane_w])
    for side in sides:
        _buildings(b, rng, side, curb_h)
        _street_lights(b, rng, side, curb_h, occupied)
        _trees(b, rng, side, curb_h, occupied)
    # signs and people where the sensors see them: within 40 m of the ego car
    for _ in range(int(rng.integers(2, 5))):
        _traffic_sign(b, rng, sides[int(rng.integers(2))], ego[0] + rng.uniform(-40.0, 40.0), curb_h, occupied)
    for _ in range(int(rng.integers(2, 10))):
        _pedestrian(b, rng, sides[int(rng.integers(2))], ego[0] + rng.uniform(-40.0, 40.0), curb_h, occupied)
    _cars(b, rng, sides, lanes, lane_w, ego)
    return Street(b.finish(), ego, heading)


def _record(cls: str, instance: int, material: Material, color_a: np.ndarray, color_b: np.ndarray | None = None,
            front: tuple[float, float, float] = (1.0, 0.0, 0.0)) -> dict:
    return dict(cls=CLASS_ID[cls], instance=instance, material=material, front=np.array(front), color_a=color_a,
                color_b=color_a if color_b is None else color_b, solid=True)


def _ground(b: Builder, rng: np.random.Generator, sides: list[_Side], half: float, curb_h: float) -> None:
    """Carriageway and parking strips at z = 0, sidewalks (boxes: their sides are the curbs), terrain beyond."""
    tar = np.full(3, rng.uniform(0.2, 0.3))
    length = SIZE[0]

    def flat(lo: np.ndarray, hi: np.ndarray, record: dict) -> None:
        verts, tris = b.quad_faces(lo, hi, [(2, 1)])
        b.add_part(verts, tris, lo=lo, hi=hi, **record)

    centre = SIZE[1] / 2
    flat(np.array([0.0, centre - half, 0.0]), np.array([length, centre + half, 0.0]),
         _record("road", b.new_instance(), Material.ROAD, tar))
    paving = hsv_color(rng, (0.05, 0.12), (0.03, 0.15), (0.6, 0.78))
    curb = hsv_color(rng, (0.0, 1.0), (0.0, 0.05), (0.7, 0.85))
    grass_a = hsv_color(rng, (0.2, 0.3), (0.45, 0.7), (0.35, 0.5))
    grass_b = hsv_color(rng, (0.12, 0.2), (0.4, 0.6), (0.4, 0.55))
    for side in sides:
        if side.parking > 0:
            flat(*side.box(0.0, length, half, side.curb, 0.0, 0.0),
                 _record("road", b.new_instance(), Material.ASPHALT, tar * rng.uniform(0.9, 1.1)))
        lo, hi = side.box(0.0, length, side.curb, side.curb + side.sidewalk, 0.0, curb_h)
        b.box(lo, hi, **_record("sidewalk", b.new_instance(), Material.PAVING, paving, curb))
        lo, hi = side.box(0.0, length, side.curb + side.sidewalk, SIZE[1] / 2, curb_h, curb_h)
        flat(lo, hi, _record("terrain", b.new_instance(), Material.GRASS, grass_a, grass_b))


def _facade_colors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wall, window frame and trim colours of one building: plaster or brick."""
    if rng.random() < 0.6:
        wall = hsv_color(rng, (0.0, 1.0), (0.05, 0.35), (0.65, 0.92))
    else:
        wall = hsv_color(rng, (0.0, 0.06), (0.45, 0.7), (0.4, 0.6))
    frame = np.full(3, 0.95) if rng.random() < 0.6 else np.full(3, rng.uniform(0.1, 0.3))
    trim = hsv_color(rng, (0.0, 1.0), (0.0, 0.15), (0.75, 0.95))
    return wall, frame, trim


def _buildings(b: Builder, rng: np.random.Generator, side: _Side, curb_h: float) -> None:
    """A row of buildings with varying setbacks (front yards), some with pilasters, balconies, cornices."""
    outer = side.curb + side.sidewalk
    toward_road = (0.0, -float(side.sign), 0.0)
    x = rng.uniform(2.0, 6.0)
    while True:
        width = rng.uniform(8.0, 25.0)
        if x + width > SIZE[0] - 2.0:
            return
        yard = rng.uniform(1.0, 6.0) if rng.random() < 0.5 else 0.0
        front, depth = outer + yard, rng.uniform(10.0, 16.0)
        floors = int(rng.integers(2, 7))
        top = curb_h + floors * STOREY + rng.uniform(0.3, 1.0)
        wall, frame, trim = _facade_colors(rng)
        inst = b.new_instance()
        b.box(*side.box(x, x + width, front, front + depth, curb_h, top),
              **_record("building", inst, Material.FACADE, wall, frame, toward_road))
        trim_record = _record("building", inst, Material.PLASTER, trim, trim, toward_road)
        bays = int(width // BAY)
        first = x + (width - bays * BAY) / 2  # the facade texture centres its bays the same way
        if rng.random() < 0.35:  # pilasters between the window bays
            depth_p = rng.uniform(0.2, 0.35)
            for k in range(bays + 1):
                xk = min(max(first + k * BAY, x + 0.2), x + width - 0.2)
                b.box(*side.box(xk - 0.2, xk + 0.2, front - depth_p, front, curb_h, top - 0.05), **trim_record)
        if rng.random() < 0.35 and floors > 1:  # balconies with a solid railing
            reach = rng.uniform(1.0, 1.4)
            for storey in range(1, floors):
                z = curb_h + storey * STOREY
                for k in range(bays):
                    if rng.random() < 0.5:
                        continue
                    cx = first + (k + 0.5) * BAY
                    b.box(*side.box(cx - 1.1, cx + 1.1, front - reach, front, z - 0.15, z), **trim_record)
                    b.box(*side.box(cx - 1.1, cx + 1.1, front - reach, front - reach + 0.05, z, z + 1.0),
                          **_record("building", inst, Material.METAL, np.full(3, 0.25), np.full(3, 0.25),
                                    toward_road))
        if rng.random() < 0.5:  # cornice along the roof line
            b.box(*side.box(x, x + width, front - 0.3, front, top - 0.4, top), **trim_record)
        if yard >= 1.6 and rng.random() < 0.6:  # a hedge along the yard's front, with a gap for the entrance
            _hedge(b, rng, side, x, x + width, outer, curb_h)
        if yard >= 3.0 and rng.random() < 0.6:  # a tree in the yard
            d = outer + yard / 2
            _tree(b, rng, side, rng.uniform(x + 1.5, x + width - 1.5), d, curb_h, yard / 2 + 0.3)
        x += width + (0.0 if rng.random() < 0.6 else rng.uniform(2.0, 8.0))


def _hedge(b: Builder, rng: np.random.Generator, side: _Side, x0: float, x1: float, d: float, z: float) -> None:
    green = hsv_color(rng, (0.22, 0.33), (0.5, 0.75), (0.2, 0.35))
    dark = green * 0.7
    depth, height = rng.uniform(0.5, 0.9), rng.uniform(0.7, 1.5)
    gap = rng.uniform(x0 + 1.5, x1 - 2.7)
    record = _record("vegetation", b.new_instance(), Material.FOLIAGE, green, dark)
    for a, c in ((x0 + 0.5, gap), (gap + 1.2, x1 - 0.5)):
        b.box(*side.box(a, c, d + 0.2, d + 0.2 + depth, z, z + height), **record)


def _street_lights(b: Builder, rng: np.random.Generator, side: _Side, z: float, occupied: _Occupancy) -> None:
    """Poles 0.5 m behind the curb every 22-32 m, with an arm over the road and a lamp head."""
    spacing = rng.uniform(22.0, 32.0)
    metal = hsv_color(rng, (0.0, 1.0), (0.0, 0.25), (0.2, 0.45))
    for x in np.arange(rng.uniform(3.0, spacing), SIZE[0] - 3.0, spacing):
        d = side.curb + 0.5
        centre = np.array([x, side.y(d)])
        if not occupied.take(centre, 0.5):
            continue
        r, height, arm = rng.uniform(0.08, 0.11), rng.uniform(6.0, 8.5), rng.uniform(1.2, 2.0)
        record = _record("pole", b.new_instance(), Material.METAL, metal)
        b.cylinder(*side.box(x - r, x + r, d - r, d + r, z, z + height), segments=12, **record)
        b.box(*side.box(x - 0.04, x + 0.04, d - arm, d - r, z + height - 0.1, z + height - 0.02), **record)
        b.box(*side.box(x - 0.15, x + 0.15, d - arm - 0.3, d - arm + 0.3, z + height - 0.2, z + height - 0.05),
              **record)


def _traffic_sign(b: Builder, rng: np.random.Generator, side: _Side, x: float, z: float,
                  occupied: _Occupancy) -> None:
    """A thin pole 0.4 m behind the curb with a 0.6 m plate facing the oncoming traffic of that side."""
    d = side.curb + 0.4
    if not occupied.take(np.array([x, side.y(d)]), 0.6):
        return
    r, height = 0.035, rng.uniform(2.3, 2.8)
    b.cylinder(*side.box(x - r, x + r, d - r, d + r, z, z + height), segments=10,
               **_record("pole", b.new_instance(), Material.METAL, np.full(3, 0.55)))
    faces = -float(side.sign)  # traffic on the -y side drives towards +x, so its signs face -x
    near = x + faces * (r + 0.005)
    x0, x1 = sorted((near, near + faces * 0.03))
    b.box(*side.box(x0, x1, d - 0.3, d + 0.3, z + height - 0.62, z + height - 0.02),
          **_record("traffic-sign", b.new_instance(), Material.SIGN, np.full(3, 0.95), np.full(3, 0.6),
                    (faces, 0.0, 0.0)))


def _trees(b: Builder, rng: np.random.Generator, side: _Side, z: float, occupied: _Occupancy) -> None:
    """Trees in pits along the sidewalk's road side, every 7-14 m with gaps (wide sidewalks only)."""
    if side.sidewalk < 2.8:
        return
    spacing = rng.uniform(7.0, 14.0)
    d = side.curb + rng.uniform(0.9, 1.3)
    for x in np.arange(rng.uniform(3.0, spacing), SIZE[0] - 3.0, spacing):
        if rng.random() < 0.25 or not occupied.take(np.array([x, side.y(d)]), 1.5):
            continue
        _tree(b, rng, side, x, d, z, side.curb + side.sidewalk - d - 0.3)  # crown clear of the facades


def _tree(b: Builder, rng: np.random.Generator, side: _Side, x: float, d: float, z: float, max_crown: float) -> None:
    """A trunk standing at height ``z`` and one or two crown tiers (radius at most ``max_crown``)."""
    r, trunk = rng.uniform(0.12, 0.22), rng.uniform(2.8, 3.6)
    crown_r, crown_h = min(rng.uniform(1.5, 2.8), max_crown), rng.uniform(2.0, 3.5)
    bark = hsv_color(rng, (0.05, 0.1), (0.3, 0.55), (0.25, 0.4))
    leaf_a = hsv_color(rng, (0.2, 0.33), (0.45, 0.75), (0.25, 0.45))
    leaf_b = hsv_color(rng, (0.15, 0.25), (0.4, 0.7), (0.35, 0.55))
    b.cylinder(*side.box(x - r, x + r, d - r, d + r, z, z + trunk + 0.3), segments=10,
               **_record("trunk", b.new_instance(), Material.BARK, bark))
    crown = _record("vegetation", b.new_instance(), Material.FOLIAGE, leaf_a, leaf_b)
    bottom = z + trunk
    b.cylinder(*side.box(x - crown_r, x + crown_r, d - crown_r, d + crown_r, bottom, bottom + crown_h),
               segments=16, **crown)
    if rng.random() < 0.6:
        r2 = 0.65 * crown_r
        b.cylinder(*side.box(x - r2, x + r2, d - r2, d + r2, bottom + crown_h, bottom + crown_h + r2),
                   segments=12, **crown)


def _pedestrian(b: Builder, rng: np.random.Generator, side: _Side, x: float, z: float, occupied: _Occupancy) -> None:
    """A person on the sidewalk's walking zone: a body cylinder (top over trousers) and a head."""
    d = side.curb + rng.uniform(1.6, side.sidewalk - 0.4)
    if not occupied.take(np.array([x, side.y(d)]), 0.5):
        return
    r, body = rng.uniform(0.18, 0.24), rng.uniform(1.35, 1.55)
    inst = b.new_instance()
    top = hsv_color(rng, (0.0, 1.0), (0.2, 0.8), (0.2, 0.85))
    trousers = hsv_color(rng, (0.55, 0.7), (0.1, 0.6), (0.1, 0.45))
    skin = hsv_color(rng, (0.04, 0.1), (0.3, 0.6), (0.35, 0.9))
    b.cylinder(*side.box(x - r, x + r, d - r, d + r, z, z + body), segments=12,
               **_record("pedestrian", inst, Material.CLOTHES, top, trousers))
    b.cylinder(*side.box(x - 0.1, x + 0.1, d - 0.1, d + 0.1, z + body, z + body + 0.25), segments=10,
               **_record("pedestrian", inst, Material.PLASTIC, skin))


# ----------------------------------------------------------------------------- cars
def _car_parts(rng: np.random.Generator) -> list[Part]:
    """A car or (one in five) a van in its local frame (x right, y front): body, cabin, four wheels."""
    van = rng.random() < 0.2
    length = rng.uniform(4.8, 5.4) if van else rng.uniform(3.9, 4.8)
    width = rng.uniform(1.85, 2.0) if van else rng.uniform(1.7, 1.9)
    wheel_r, ground = rng.uniform(0.3, 0.34), 0.25
    body_top = rng.uniform(0.95, 1.1)
    if rng.random() < 0.5:
        paint = np.full(3, rng.choice([0.08, 0.3, 0.55, 0.75, 0.92]))
    else:
        paint = hsv_color(rng, (0.0, 1.0), (0.5, 0.9), (0.3, 0.8))
    glass = np.array([0.12, 0.15, 0.2]) * rng.uniform(0.8, 1.3)
    if van:
        cabin_lo, cabin_hi, cabin_top = -length / 2 + 0.1, length / 2 - 0.9, rng.uniform(1.9, 2.2)
    else:
        cabin_len = rng.uniform(0.45, 0.6) * length
        cabin_lo = -length / 2 + rng.uniform(0.7, 1.0)
        cabin_hi, cabin_top = cabin_lo + cabin_len, body_top + rng.uniform(0.42, 0.55)
    inset = 0.07
    parts = [Part((-width / 2, -length / 2, ground), (width / 2, length / 2, body_top), Material.CAR_PAINT, paint,
                  paint),
             Part((-width / 2 + inset, cabin_lo, body_top), (width / 2 - inset, cabin_hi, cabin_top),
                  Material.CAR_CABIN, paint, glass)]
    rubber, rim = np.full(3, 0.08), np.full(3, 0.7)
    axle = length / 2 - rng.uniform(0.75, 0.95)
    for sx in (-1, 1):
        for sy in (-1, 1):
            # 2 cm proud of the body's side, so the rim is not coplanar with the paint
            x0, x1 = sorted((sx * (width / 2 - 0.18), sx * (width / 2 + 0.02)))
            y = sy * axle
            parts.append(Part((x0, y - wheel_r, 0.0), (x1, y + wheel_r, 2 * wheel_r), Material.TYRE, rubber, rim,
                              cylinder=True, axis=0))
    return parts


def _cars(b: Builder, rng: np.random.Generator, sides: list[_Side], lanes: int, lane_w: float,
          ego: np.ndarray) -> None:
    """Parked cars along the parking strips (facing their side's traffic) and cars driving in every lane."""
    ego_box = np.array([ego - EGO_HALF_SIZE - 0.5, ego + EGO_HALF_SIZE + 0.5])
    rows: list[tuple[float, np.ndarray, float, float, float]] = []  # (y, front, gap low, gap high, occupancy)
    for side in sides:
        front = np.array([-float(side.sign), 0.0])
        if side.parking > 0:
            rows.append((float(side.y(side.curb - side.parking / 2)), front, 0.6, 2.5, rng.uniform(0.4, 0.85)))
        for lane in range(lanes):
            rows.append((float(side.y((lane + 0.5) * lane_w)), front, 8.0, 40.0, 1.0))
    for y, front, gap_lo, gap_hi, occupancy in rows:
        x = rng.uniform(2.0, 10.0)
        while x < SIZE[0] - 8.0:
            parts = _car_parts(rng)
            length = max(p.hi[1] for p in parts) - min(p.lo[1] for p in parts)
            centre = np.array([x + length / 2, y + rng.uniform(-0.15, 0.15)])
            x += length + rng.uniform(gap_lo, gap_hi)
            half = np.array([length / 2, 1.0])
            clear = np.any(centre + half < ego_box[0]) or np.any(centre - half > ego_box[1])
            if clear and rng.random() < occupancy:
                emit(b, parts, centre, front, cls=CLASS_ID["car"], instance=b.new_instance())
