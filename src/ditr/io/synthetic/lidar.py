"""A spinning multi-beam LiDAR simulated by ray casting: ring structure, range noise, intensity.

The sensor fires all of its beams (fixed elevation angles, one per *ring*) at every azimuth step of
one full turn, from one point (its optical centre), in one instant: a static snapshot without the
motion distortion of a real sweep. A beam's return is the first surface it meets within the maximum
range; rays that meet nothing (sky, beyond the scene) give no point. The measured range is the true
range plus Gaussian noise, so a point lies on its beam, off the surface by the noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from .geometry import Geometry
from .render import cast_rays


def velodyne_elevations(beams: int) -> tuple[float, ...]:
    """Beam elevations (degrees, ascending) like a Velodyne HDL-32E (32: -30.67 to +10.67 in even
    steps) or HDL-64E (64: an upper block of 32 beams from -8.33 to +2.0 and a lower block of 32 from
    -24.9 to -8.83, each evenly spaced, approximating the sensor's two laser blocks)."""
    if beams == 32:
        angles = np.linspace(-30.67, 10.67, 32)
    elif beams == 64:
        angles = np.concatenate([np.linspace(-24.9, -8.83, 32), np.linspace(-8.33, 2.0, 32)])
    else:
        raise ValueError(f"velodyne_elevations: beams must be 32 or 64, got {beams}")
    return tuple(round(float(a), 4) for a in angles)


@dataclass(frozen=True)
class LidarConfig:
    """A spinning LiDAR: ``elevations_deg`` (one beam per ring, ascending), the azimuth step of the
    turn (degrees), the maximum range (m), the standard deviation of the range noise (m) and of the
    intensity noise."""

    elevations_deg: tuple[float, ...]
    azimuth_step_deg: float = 0.2
    max_range: float = 100.0
    range_noise: float = 0.02
    intensity_noise: float = 0.02

    def __post_init__(self) -> None:
        """Refuse settings that would silently give no or a wrong scan."""
        e = np.asarray(self.elevations_deg, dtype=np.float64)
        if e.ndim != 1 or e.size == 0 or not np.all(np.diff(e) > 0) or np.abs(e).max() >= 90:
            raise ValueError(f"elevations_deg must be ascending angles in (-90, 90), got {self.elevations_deg}")
        if not 0 < self.azimuth_step_deg <= 360:
            raise ValueError(f"azimuth_step_deg must be in (0, 360], got {self.azimuth_step_deg}")
        if not self.max_range > 0 or not self.range_noise >= 0 or not self.intensity_noise >= 0:
            raise ValueError(f"need max_range > 0 and non-negative noise, got {self.max_range=}, "
                             f"{self.range_noise=}, {self.intensity_noise=}")

    @classmethod
    def velodyne(cls, beams: int, **kwargs: float) -> LidarConfig:
        """The HDL-32E-like (32) or HDL-64E-like (64) beam layout of :func:`velodyne_elevations`."""
        return cls(velodyne_elevations(beams), **kwargs)

    @property
    def beams(self) -> int:
        return len(self.elevations_deg)

    @property
    def columns(self) -> int:
        """Azimuth steps in one turn."""
        return int(round(360.0 / self.azimuth_step_deg))

    def directions(self) -> np.ndarray:
        """Unit beam directions in the sensor frame (x forward, y left, z up), (columns * beams, 3):
        column-major like the firing order, azimuth counter-clockwise from +x, ring fastest."""
        azimuth = np.radians(np.arange(self.columns) * self.azimuth_step_deg)[:, None]
        elevation = np.radians(np.asarray(self.elevations_deg))[None, :]
        d = np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                         np.sin(elevation)), axis=-1)
        return d.reshape(-1, 3)

    def as_meta(self) -> dict:
        """JSON-ready description for a scene's meta.json."""
        return {"beams": self.beams, "elevations_deg": list(self.elevations_deg),
                "azimuth_step_deg": self.azimuth_step_deg, "columns": self.columns, "max_range": self.max_range,
                "range_noise": self.range_noise, "intensity_noise": self.intensity_noise}


@dataclass
class Scan:
    """One turn's returns. ``surface`` is where each beam met the surface (exact), ``points`` what the
    sensor measured (``surface`` moved along the beam by the range noise); ``face`` is the triangle hit."""

    points: np.ndarray   # (N, 3) float64
    surface: np.ndarray  # (N, 3) float64
    direction: np.ndarray  # (N, 3) unit beam directions (world)
    ring: np.ndarray     # (N,) beam index into elevations_deg
    column: np.ndarray   # (N,) azimuth step index
    face: np.ndarray     # (N,) triangle index


def scan(geometry: Geometry, mesh: trimesh.Trimesh, sensor_to_world: np.ndarray, config: LidarConfig,
         rng: np.random.Generator) -> Scan:
    """Cast every beam of one turn from the sensor at ``sensor_to_world`` (4x4, x forward, z up)."""
    local = config.directions()
    directions = local @ sensor_to_world[:3, :3].T
    origins = np.broadcast_to(sensor_to_world[:3, 3], directions.shape)
    face, t = cast_rays(geometry, mesh, origins, directions)
    keep = np.flatnonzero((face >= 0) & (t <= config.max_range))
    d = directions[keep]
    surface = origins[keep] + t[keep, None] * d
    measured = t[keep] + rng.normal(0.0, config.range_noise, len(keep))
    return Scan(points=origins[keep] + measured[:, None] * d, surface=surface, direction=d,
                ring=keep % config.beams, column=keep // config.beams, face=face[keep])


def intensity(reflectivity: np.ndarray, color: np.ndarray, normal: np.ndarray, direction: np.ndarray,
              noise: float, rng: np.random.Generator) -> np.ndarray:
    """Return strength in [0, 1]: the mean of a class reflectivity and the surface's brightness (so white
    lane paint outshines asphalt), scaled by the incidence (0.4 at grazing, 1 head-on), plus noise."""
    brightness = (color.astype(np.float64) / 255.0) @ np.array([0.299, 0.587, 0.114])
    incidence = np.abs(np.einsum("ij,ij->i", normal, direction))
    value = 0.5 * (reflectivity + brightness) * (0.4 + 0.6 * incidence) + rng.normal(0.0, noise, len(color))
    return np.clip(value, 0.0, 1.0).astype(np.float32)
