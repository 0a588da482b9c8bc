"""Recipes for furniture, rugs and wall panels: class-specific shapes, sizes and colours.

Each recipe returns the parts of one item in its local frame (x right, y towards the front, z up,
footprint centred on the origin, back at the lowest y); :mod:`.layout` places and turns them. Shapes
that should look alike to a depth sensor are made alike on purpose (cabinet and shelf share their
outer size distribution; panels are a few millimetres thick), so only appearance tells them apart.
"""

from __future__ import annotations

import numpy as np

from .geometry import Part
from .textures import Material, hsv_to_rgb


# ----------------------------------------------------------------------------- colours
def hsv_color(rng: np.random.Generator, h: tuple[float, float], s: tuple[float, float],
              v: tuple[float, float]) -> np.ndarray:
    return hsv_to_rgb(np.array(rng.uniform(*h)), np.array(rng.uniform(*s)), np.array(rng.uniform(*v)))


def wood_colors(rng: np.random.Generator, light: bool = False) -> tuple[np.ndarray, np.ndarray]:
    base = hsv_color(rng, (0.06, 0.1), (0.35, 0.6), (0.6, 0.8) if light else (0.35, 0.6))
    return base, base * rng.uniform(0.7, 0.82)


def _metal_color(rng: np.random.Generator) -> np.ndarray:
    return np.full(3, rng.uniform(0.2, 0.7))


# ----------------------------------------------------------------------------- furniture
def _table(rng: np.random.Generator) -> list[Part]:
    w, d, h, t, leg = rng.uniform(1.0, 1.8), rng.uniform(0.7, 1.0), rng.uniform(0.72, 0.78), 0.04, 0.035
    top_a, top_b = wood_colors(rng)
    legs_a = _metal_color(rng) if rng.random() < 0.5 else top_b
    parts = [Part((-w / 2, -d / 2, h - t), (w / 2, d / 2, h), Material.WOOD, top_a, top_b)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (w / 2 - 0.05 - leg / 2), sy * (d / 2 - 0.05 - leg / 2)
            parts.append(Part((x - leg / 2, y - leg / 2, 0.0), (x + leg / 2, y + leg / 2, h - t), Material.METAL,
                              legs_a, legs_a))
    return parts


def _chair(rng: np.random.Generator) -> list[Part]:
    w, d, seat, t, leg = rng.uniform(0.42, 0.5), rng.uniform(0.42, 0.5), rng.uniform(0.43, 0.48), 0.05, 0.022
    top = seat + rng.uniform(0.38, 0.5)
    cushion = hsv_color(rng, (0.0, 1.0), (0.5, 0.85), (0.45, 0.85))
    legs = _metal_color(rng)
    material = Material.PLASTIC if rng.random() < 0.5 else Material.FABRIC
    parts = [Part((-w / 2, -d / 2, seat - t), (w / 2, d / 2, seat), material, cushion, cushion),
             Part((-w / 2, -d / 2, seat), (w / 2, -d / 2 + 0.04, top), material, cushion, cushion)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (w / 2 - leg / 2), sy * (d / 2 - leg / 2)
            parts.append(Part((x - leg / 2, y - leg / 2, 0.0), (x + leg / 2, y + leg / 2, seat - t), Material.METAL,
                              legs, legs))
    return parts


def _bed(rng: np.random.Generator) -> list[Part]:
    w, d = (rng.uniform(1.4, 1.8) if rng.random() < 0.6 else rng.uniform(0.9, 1.0)), rng.uniform(2.0, 2.15)
    frame_a, frame_b = wood_colors(rng)
    cover_a = hsv_color(rng, (0.0, 1.0), (0.3, 0.7), (0.5, 0.85))
    cover_b = hsv_color(rng, (0.0, 1.0), (0.2, 0.5), (0.75, 0.95))
    pillow = hsv_color(rng, (0.0, 1.0), (0.0, 0.1), (0.88, 0.97))
    head = rng.uniform(0.75, 0.95)
    return [Part((-w / 2, -d / 2, 0.0), (w / 2, -d / 2 + 0.06, head), Material.WOOD, frame_a, frame_b),
            Part((-w / 2, -d / 2 + 0.06, 0.0), (w / 2, d / 2, 0.3), Material.WOOD, frame_a, frame_b),
            Part((-w / 2 + 0.02, -d / 2 + 0.06, 0.3), (w / 2 - 0.02, d / 2 - 0.02, 0.52), Material.CHECK,
                 cover_a, cover_b),
            Part((-w / 2 + 0.12, -d / 2 + 0.1, 0.52), (w / 2 - 0.12, -d / 2 + 0.5, 0.64), Material.PILLOW,
                 pillow, pillow)]


def _sofa(rng: np.random.Generator) -> list[Part]:
    w, d, arm = rng.uniform(1.6, 2.4), rng.uniform(0.8, 0.95), 0.18
    fabric = hsv_color(rng, (0.0, 1.0), (0.25, 0.7), (0.3, 0.7))
    back_top, arm_top = rng.uniform(0.78, 0.9), rng.uniform(0.58, 0.66)
    return [Part((-w / 2, -d / 2, 0.0), (w / 2, d / 2, 0.42), Material.FABRIC, fabric, fabric),
            Part((-w / 2, -d / 2, 0.42), (w / 2, -d / 2 + 0.22, back_top), Material.FABRIC, fabric, fabric),
            Part((-w / 2, -d / 2 + 0.22, 0.42), (-w / 2 + arm, d / 2, arm_top), Material.FABRIC, fabric, fabric),
            Part((w / 2 - arm, -d / 2 + 0.22, 0.42), (w / 2, d / 2, arm_top), Material.FABRIC, fabric, fabric)]


def _box_size(rng: np.random.Generator) -> tuple[float, float, float]:
    """Outer size shared by cabinets and shelves, so only appearance and the open front tell them apart."""
    return rng.uniform(0.6, 1.2), rng.uniform(0.35, 0.55), rng.uniform(0.8, 2.0)


def _cabinet(rng: np.random.Generator) -> list[Part]:
    w, d, h = _box_size(rng)
    paint = hsv_color(rng, (0.0, 1.0), (0.05, 0.45), (0.5, 0.95))
    return [Part((-w / 2, -d / 2, 0.0), (w / 2, d / 2, h), Material.PAINTED, paint, _metal_color(rng))]


def _shelf(rng: np.random.Generator) -> list[Part]:
    w, d, h = _box_size(rng)
    # a closed plinth: rays through the open front meet the thin back or sides no lower than this, so the
    # floor behind them is always clearly (> 0.2 m in depth) hidden, never a near miss
    t, plinth = 0.025, 0.25
    wood_a, wood_b = wood_colors(rng, light=True)
    parts = [Part((-w / 2, -d / 2, 0.0), (-w / 2 + t, d / 2, h), Material.WOOD, wood_a, wood_b),
             Part((w / 2 - t, -d / 2, 0.0), (w / 2, d / 2, h), Material.WOOD, wood_a, wood_b),
             Part((-w / 2 + t, -d / 2, 0.0), (w / 2 - t, -d / 2 + 0.015, h), Material.BOOKS, wood_b, wood_b),
             Part((-w / 2 + t, -d / 2 + 0.015, h - t), (w / 2 - t, d / 2, h), Material.WOOD, wood_a, wood_b),
             Part((-w / 2 + t, -d / 2 + 0.015, 0.0), (w / 2 - t, d / 2, plinth), Material.WOOD, wood_a, wood_b)]
    levels = max(0, int(round((h - plinth) / 0.35)) - 1)
    for z in np.linspace(plinth, h - t, levels + 2)[1:-1]:
        parts.append(Part((-w / 2 + t, -d / 2 + 0.015, z - t / 2), (w / 2 - t, d / 2, z + t / 2), Material.WOOD,
                          wood_a, wood_b))
    return parts


def _lamp(rng: np.random.Generator) -> list[Part]:
    top, r = rng.uniform(1.45, 1.75), rng.uniform(0.17, 0.24)
    shade = hsv_color(rng, (0.08, 0.15), (0.15, 0.4), (0.8, 0.95))
    metal = _metal_color(rng)
    return [Part((-0.15, -0.15, 0.0), (0.15, 0.15, 0.03), Material.METAL, metal, metal, cylinder=True),
            Part((-0.015, -0.015, 0.03), (0.015, 0.015, top - 0.32), Material.METAL, metal, metal, cylinder=True),
            Part((-r, -r, top - 0.32), (r, r, top), Material.SHADE, shade, shade, cylinder=True)]


def rug(rng: np.random.Generator) -> list[Part]:
    w, d, t = rng.uniform(1.2, 2.4), rng.uniform(0.8, 1.7), rng.uniform(0.002, 0.004)
    a = hsv_color(rng, (0.0, 1.0), (0.45, 0.8), (0.35, 0.7))
    b = hsv_color(rng, (0.0, 1.0), (0.3, 0.7), (0.6, 0.9))
    return [Part((-w / 2, -d / 2, 0.0), (w / 2, d / 2, t), Material.RUG, a, b)]


WALL_BACKED = {"bed": _bed, "sofa": _sofa, "cabinet": _cabinet, "shelf": _shelf}
FREE_STANDING = {"table": _table, "chair": _chair, "lamp": _lamp}


# ----------------------------------------------------------------------------- wall panels
def panel(kind: str, rng: np.random.Generator) -> tuple[float, float, float, float, Material, np.ndarray, np.ndarray]:
    """Width, height, bottom, thickness (a few mm: nearly invisible to geometry), material, colours."""
    thickness = rng.uniform(0.002, 0.005)
    if kind == "door":
        a, b = wood_colors(rng, light=rng.random() < 0.5)
        return rng.uniform(0.8, 1.0), rng.uniform(2.0, 2.1), 0.0, thickness, Material.DOOR, a, b
    if kind == "window":
        frame = np.full(3, rng.uniform(0.85, 0.97))
        return (rng.uniform(0.9, 1.6), rng.uniform(1.0, 1.3), rng.uniform(0.8, 1.0), thickness, Material.WINDOW,
                frame, frame)
    if kind == "picture":
        w, h = rng.uniform(0.4, 1.0), rng.uniform(0.35, 0.8)
        frame = wood_colors(rng)[1] if rng.random() < 0.5 else np.array([0.75, 0.6, 0.25])
        return w, h, rng.uniform(1.45, 1.7) - h / 2, thickness, Material.PICTURE, np.zeros(3), frame
    if kind == "whiteboard":
        h = rng.uniform(0.9, 1.2)
        return (rng.uniform(1.2, 2.0), h, rng.uniform(0.85, 1.0), thickness, Material.WHITEBOARD,
                np.full(3, 0.97), np.full(3, 0.72))
    raise ValueError(kind)
