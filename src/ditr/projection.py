"""Point -> pixel correspondences with visibility, batched over all views at once.

See docs/design.md#projection-and-visibility.

For every (view, point) pair we compute the pixel ``(u, v)`` (u = column, v = row, continuous, in the
original image), the camera depth ``z`` and whether the point is visible: in front of the camera,
inside the image, inside the optional depth gate, and not occluded. The pixel comes from the pinhole
model, or from the view's stored per-point ``pixels`` where the scene has them (the dataset's own
projection, with lens distortion and rolling shutter; docs/scene-format.md#per-point-pixels): the
depth ``z`` is then still the pose's, which those effects do not change. Occlusion is tested

* against the view's depth map when it has one (``|z - depth| <= tolerance``, the reference rule), or
* against the points themselves, by the test that suits what made them (:func:`occlusion_rule`):
  a depth buffer splatted with footprints from the surface spacing (dense surfaces) or from each
  LiDAR return's beam cell (scans), or, for sparse clouds, whether nearer points bracket a point.
  This is what makes occlusion possible for scans without depth maps and for LiDAR rigs, where the
  reference does none.

Everything is vectorised torch on any device; points are processed in chunks to bound memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from . import checks
from .errors import ConfigError, DitrError
from .scene import ACQUISITION_KINDS, Scene

Occlusion = Literal["auto", "depth", "splat", "none"]
#: How a view without a depth map is tested (:func:`occlusion_rule`).
Rule = Literal["surface", "scan", "sparse"]

#: Largest splat radius (in depth-buffer pixels); larger footprints use a coarser buffer instead.
_MAX_SPLAT_RADIUS = 3
#: Buffer cells written per scatter when splatting (bounds its temporary memory to about 150 MB).
_SPLAT_CHUNK = 1 << 21


@dataclass(frozen=True)
class ProjectionConfig:
    """How visibility is decided. Defaults follow the reference's indoor rule without depth gating.

    Attributes:
        occlusion: ``auto`` uses a view's depth map when it has one and otherwise the test that
            suits what made the points (:func:`occlusion_rule`); ``depth`` requires depth maps;
            ``splat`` always splats footprints from the surface spacing; ``none`` skips it.
        depth_tolerance: metres a point may lie behind the observed surface and still count as it.
        min_depth / max_depth: depth gate in metres (ScanNet's reference uses 1.0 and 4.0).
        point_spacing: typical distance between neighbouring points in metres, which sets the
            splat footprint; estimated from the points when None.
        splat_radius_px: a fixed splat radius in image pixels instead.
        splat_scale: footprint radius as a multiple of the projected point spacing.
        use_normals: in the splatted test, use point normals where the scene has them: points
            facing away from the camera are hidden, and the tolerance grows on grazing surfaces.
        chunk_size: points per chunk; bounds the temporary memory to about chunk_size x views.
        acquisition: what made the points (``lidar``, ``sfm``, ...; see
            :data:`~ditr.scene.ACQUISITION_KINDS`) when the scene's ``meta.json`` does not say or says
            wrong; ``auto`` picks its occlusion rule by it (:func:`occlusion_rule`).
    """

    occlusion: Occlusion = "auto"
    depth_tolerance: float = 0.2
    min_depth: float = 0.0
    max_depth: float | None = None
    point_spacing: float | None = None
    splat_radius_px: float | None = None
    splat_scale: float = 1.0
    use_normals: bool = True
    chunk_size: int = 1 << 18
    acquisition: str | None = None

    def __post_init__(self) -> None:
        """Ranges: a negative or NaN tolerance would hide every point, a NaN gate would pass none."""
        checks.one_of("occlusion", self.occlusion, ("auto", "depth", "splat", "none"))
        checks.number("depth_tolerance", self.depth_tolerance, low=0)
        checks.number("min_depth", self.min_depth, low=0)
        checks.number("max_depth", self.max_depth, low=0, low_open=True, optional=True)
        if self.max_depth is not None and self.max_depth <= self.min_depth:
            raise ConfigError("", "max_depth", f"({self.max_depth}) must exceed min_depth ({self.min_depth})")
        checks.number("point_spacing", self.point_spacing, low=0, low_open=True, optional=True)
        checks.number("splat_radius_px", self.splat_radius_px, low=0, low_open=True, optional=True)
        checks.number("splat_scale", self.splat_scale, low=0, low_open=True)
        checks.positive_int("chunk_size", self.chunk_size)
        if self.acquisition is not None:
            checks.one_of("acquisition", self.acquisition, ACQUISITION_KINDS)


@dataclass
class Correspondences:
    """Per (view, point) pixel coordinates, depth and visibility.

    ``in_frame`` is the geometric test alone (in front, inside the image and the depth gate; for a
    view with stored pixels also: the point has one); ``visible`` additionally passed the occlusion
    test, so ``in_frame & ~visible`` are occluded. ``uv`` is meaningful only where ``in_frame``.
    ``rules`` names per view the occlusion test that ran (``depth``, ``surface``, ``scan``, ``sparse``
    or ``none``); ``warnings`` say where a test cannot be trusted: ``sparse_views``, whose points are
    too sparse for it.
    """

    uv: torch.Tensor  # (V, N, 2) float32
    depth: torch.Tensor  # (V, N) float32
    in_frame: torch.Tensor  # (V, N) bool
    visible: torch.Tensor  # (V, N) bool
    view_names: list[str]
    image_sizes: torch.Tensor  # (V, 2) long, (height, width)
    rules: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sparse_views: list[str] = field(default_factory=list)

    @property
    def num_views(self) -> int:
        return int(self.uv.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.uv.shape[1])

    @property
    def seen(self) -> torch.Tensor:
        """(N,) bool: visible in at least one view."""
        return self.visible.any(dim=0)

    def summary(self) -> dict:
        """Counts that tell at a glance whether calibration and occlusion behave.

        ``occluded_point_views`` = ``in_frame_point_views - visible_point_views``: the point-views
        that the occlusion test removed (0 with occlusion "none"), in total and per view;
        ``occlusion_rules`` counts the views per test that ran.
        """
        per_view = self.visible.sum(dim=1).tolist()
        occluded = (self.in_frame & ~self.visible).sum(dim=1).tolist()
        return {
            "points": self.num_points,
            "views": self.num_views,
            "in_frame_point_views": int(self.in_frame.sum()),
            "visible_point_views": int(sum(per_view)),
            "occluded_point_views": int(sum(occluded)),
            "seen_fraction": float(self.seen.float().mean()) if self.num_points else 0.0,
            "visible_per_view": dict(zip(self.view_names, per_view)),
            "occluded_per_view": dict(zip(self.view_names, occluded)),
            "occlusion_rules": {rule: self.rules.count(rule) for rule in dict.fromkeys(self.rules)},
            "warnings": list(self.warnings),
        }

    def save_npz(self, path) -> None:
        """Write the docs/design.md#command-line arrays (uv, visible, depth, views) plus in_frame and image sizes."""
        from .fileio import atomic_save_npz

        atomic_save_npz(path, uv=self.uv.cpu().numpy(), visible=self.visible.cpu().numpy(),
                        depth=self.depth.cpu().numpy(), in_frame=self.in_frame.cpu().numpy(),
                        views=np.array(self.view_names), image_sizes=self.image_sizes.cpu().numpy())


# ---------------------------------------------------------------------------------------- geometry
def project_points(points: torch.Tensor, world_to_cam: torch.Tensor, intrinsics: torch.Tensor,
                   out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pinhole projection of (N, 3) points into V cameras: returns uv (V, N, 2) and depth z (V, N).

    ``K [R | t]`` of all views is stacked into one (3V, 3) matrix so that the batch is a single
    GEMM against the (3, N) points; uv is computed in a (V, 2, N) layout and returned as a
    transposed view, which saves an interleaving pass. ``out`` = (uv (V, 2, N), z (V, N)) buffers
    receive the results in place. Points behind the camera get meaningless uv; test ``z > 0``.
    """
    nv = world_to_cam.shape[0]
    proj = intrinsics @ world_to_cam[:, :3, :]  # (V, 3, 4)
    h = torch.addmm(proj[:, :, 3].reshape(3 * nv, 1), proj[:, :, :3].reshape(3 * nv, 3), points.T)
    h = h.view(nv, 3, -1)
    if out is None:
        z = h[:, 2]
        return (h[:, :2] / z.unsqueeze(1)).transpose(1, 2), z
    uv_out, z_out = out
    z_out.copy_(h[:, 2])
    torch.div(h[:, :2], z_out.unsqueeze(1), out=uv_out)
    return uv_out.transpose(1, 2), z_out


def _in_image(uv: torch.Tensor, z: torch.Tensor, sizes: torch.Tensor, cfg: ProjectionConfig) -> torch.Tensor:
    """In front of the camera, inside the image and inside the depth gate."""
    h = sizes[:, 0, None].to(uv.dtype)
    w = sizes[:, 1, None].to(uv.dtype)
    u, v = uv[..., 0], uv[..., 1]
    ok = (z > max(cfg.min_depth, 1e-6)) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    if cfg.max_depth is not None:
        ok &= z < cfg.max_depth
    return ok


def estimate_point_spacing(points: torch.Tensor) -> float:
    """Typical neighbour distance of points sampled on surfaces, from occupied-voxel counts.

    For a voxel size g well above the spacing, a surface of area A occupies about 1.5 A / g^2
    voxels (1 for axis-aligned planes, more for oblique ones); picking g so that voxels hold about
    eight points each gives A, and the mean spacing of N points on it is sqrt(A / N).
    """
    n = points.shape[0]
    if n < 16:
        return 0.05
    pts = points.double()
    lo = pts.min(0).values
    extent = float((pts.max(0).values - lo).max())
    if extent <= 0:
        return 0.05
    g_lo, g_hi = extent / 4096, extent
    occupied = n
    for _ in range(14):  # bisection on log(g) for about n / 8 occupied voxels
        g = math.sqrt(g_lo * g_hi)
        cells = torch.floor((pts - lo) / g).long()
        key = (cells[:, 0] * 4099 + cells[:, 1]) * 4099 + cells[:, 2]
        occupied = int(torch.unique(key).numel())
        if occupied > n / 8:
            g_lo = g
        else:
            g_hi = g
    g = math.sqrt(g_lo * g_hi)
    area = occupied * g * g / 1.5
    return math.sqrt(area / n)


# ---------------------------------------------------------------------------------------- occlusion
class _SplatBuffer:
    """Z-buffers of all views at one stride per axis, splatted from points with footprints of a few cells.

    A point covers a rectangle of ``radius`` = (rows, columns) buffer cells on each side of its own.
    """

    def __init__(self, sizes: torch.Tensor, stride: tuple[int, int], device: torch.device):
        self.stride_v, self.stride_u = stride
        self.views = int(sizes.shape[0])
        self.hb = int(math.ceil(int(sizes[:, 0].max()) / self.stride_v))
        self.wb = int(math.ceil(int(sizes[:, 1].max()) / self.stride_u))
        self.cells = self.views * self.hb * self.wb
        self.device = device

    def _cells(self, view: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        col = (uv[:, 0] / self.stride_u).long().clamp(0, self.wb - 1)
        row = (uv[:, 1] / self.stride_v).long().clamp(0, self.hb - 1)
        return (view * self.hb + row) * self.wb + col

    def render(self, view: torch.Tensor, uv: torch.Tensor, z: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """The splatted depth per cell (inf where no point reaches); ``radius`` is (P, 2) cells (rows, columns).

        Two equivalent ways, whichever touches fewer cells: every point writes its depth into each
        cell of its rectangle (a scatter-min; few points), or per radius a scatter-min into the
        centre cells followed by a rectangular min filter over the whole buffer (many points).
        """
        cells = self._cells(view, uv)
        counts = (2 * radius[:, 0] + 1) * (2 * radius[:, 1] + 1)
        key = radius[:, 0] * (int(radius[:, 1].max()) + 1) + radius[:, 1]  # one number per (rows, columns)
        pairs = torch.unique(key)
        if int(counts.sum()) > len(pairs) * self.cells:
            return self._filtered(cells, z, radius, key, pairs)
        merged = torch.full((self.cells,), math.inf, device=self.device)
        ends = torch.cumsum(counts, 0)
        first = 0
        while first < len(counts):  # chunks of about _SPLAT_CHUNK written cells
            last = int(torch.searchsorted(ends, ends[first] - counts[first] + _SPLAT_CHUNK, right=True))
            last = max(last, first + 1)
            n = counts[first:last]
            point = torch.repeat_interleave(torch.arange(first, last, device=self.device), n)
            within = torch.arange(int(n.sum()), device=self.device) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
            rv, ru = radius[point, 0], radius[point, 1]
            r = cells[point] // self.wb % self.hb + within // (2 * ru + 1) - rv
            c = cells[point] % self.wb + within % (2 * ru + 1) - ru
            inside = (r >= 0) & (r < self.hb) & (c >= 0) & (c < self.wb)
            merged.scatter_reduce_(0, ((view[point] * self.hb + r) * self.wb + c)[inside], z[point][inside],
                                   reduce="amin")
            first = last
        return merged

    def _filtered(self, cells: torch.Tensor, z: torch.Tensor, radius: torch.Tensor, key: torch.Tensor,
                  pairs: torch.Tensor) -> torch.Tensor:
        merged = torch.full((self.cells,), math.inf, device=self.device)
        for pair in pairs.tolist():
            sel = key == pair
            rv, ru = radius[sel][0].tolist()
            level = torch.full((self.cells,), math.inf, device=self.device)
            level.scatter_reduce_(0, cells[sel], z[sel], reduce="amin")
            grid = -level.view(self.views, 1, self.hb, self.wb)  # a rectangular min filter, separably
            if ru > 0:
                grid = F.max_pool2d(grid, kernel_size=(1, 2 * ru + 1), stride=1, padding=(0, ru))
            if rv > 0:
                grid = F.max_pool2d(grid, kernel_size=(2 * rv + 1, 1), stride=1, padding=(rv, 0))
            merged = torch.minimum(merged, -grid.reshape(-1))
        return merged


def _splatted_depth(vi: torch.Tensor, uv: torch.Tensor, z: torch.Tensor, half_v: torch.Tensor,
                    half_u: torch.Tensor, sizes: torch.Tensor, max_cells: int) -> torch.Tensor:
    """Per point, the nearest depth that any point's footprint (``half_v`` x ``half_u`` pixels on each
    side of it) puts on the point's own pixel, in view ``vi``.

    Footprints of up to ``max_cells`` pixels are splatted at full resolution; larger ones (points close
    to the camera) into buffers of stride 2, 4, ... along that axis, where they span a few cells, so a
    point writes a bounded number of cells. Each point reads every buffer at its own cell (what a
    nearest-neighbour upsampling to full resolution would give it).
    """
    def level(half: torch.Tensor) -> torch.Tensor:
        return torch.ceil(torch.log2(half.clamp(min=1e-6) / max_cells)).clamp(0, 10).long()

    levels = level(half_v) * 16 + level(half_u)
    nearest = torch.full_like(z, math.inf)
    for both in torch.unique(levels).tolist():
        sel = levels == both
        ev, eu = divmod(both, 16)
        buf = _SplatBuffer(sizes, (2 ** ev, 2 ** eu), uv.device)
        radius = torch.stack([torch.round(half_v[sel] / 2 ** ev), torch.round(half_u[sel] / 2 ** eu)], dim=1)
        zbuf = buf.render(vi[sel], uv[sel], z[sel], radius.long().clamp(0, max_cells))
        nearest = torch.minimum(nearest, zbuf[buf._cells(vi, uv)])
    return nearest


def _splat_radius_px(z: torch.Tensor, focal: torch.Tensor, cfg: ProjectionConfig, spacing: float) -> torch.Tensor:
    if cfg.splat_radius_px is not None:
        return torch.full_like(z, float(cfg.splat_radius_px))
    return cfg.splat_scale * focal * spacing / z


# ---------------------------------------------------------------------------------------- main entry
def compute_correspondences(
    points: torch.Tensor,
    world_to_cam: torch.Tensor,
    intrinsics: torch.Tensor,
    image_sizes: torch.Tensor,
    config: ProjectionConfig = ProjectionConfig(),
    depth_maps: list[torch.Tensor | None] | None = None,
    depth_intrinsics: list[torch.Tensor | None] | None = None,
    view_names: list[str] | None = None,
    normals: torch.Tensor | None = None,
    pixels: list[torch.Tensor | None] | None = None,
    acquisition: str | None = None,
    sensor_to_scene: torch.Tensor | None = None,
) -> Correspondences:
    """Correspondences between points (N, 3) and V views given as tensors.

    Args:
        world_to_cam: (V, 4, 4) extrinsics; intrinsics: (V, 3, 3); image_sizes: (V, 2) (H, W).
        depth_maps: per view a (Hd, Wd) metric depth map (0 = missing) or None.
        depth_intrinsics: per view the depth camera's (3, 3) intrinsics when they differ from the
            colour camera's (same pose, as in registered RGB-D), else None.
        normals: optional (N, 3) point normals; the splatted test then culls back faces and
            widens its tolerance on surfaces seen at grazing angles (see ``_splat_test``).
        pixels: per view the (N, 2) pixels the dataset projected the points to (NaN = not
            projected), which replace the pinhole pixels of that view, or None.
        acquisition: what made the points (the scene's ``meta.json``); ``config.acquisition``
            overrides it. Picks the test for views without a depth map (:func:`occlusion_rule`).
        sensor_to_scene: (4, 4) pose of the LiDAR that scanned the points (z its spin axis), for
            ``lidar`` scans; None: the scene frame is the sensor's.
    """
    device = points.device
    nv, n = int(world_to_cam.shape[0]), int(points.shape[0])
    depth_maps = depth_maps or [None] * nv
    depth_intrinsics = depth_intrinsics or [None] * nv
    view_names = view_names or [f"view{i}" for i in range(nv)]
    image_sizes = image_sizes.to(device=device, dtype=torch.long)
    stored, stored_uv, stored_has = _stored_pixels(pixels or [None] * nv, n, view_names, device)
    has_depth = torch.tensor([d is not None for d in depth_maps], device=device)
    if config.occlusion == "depth" and not bool(has_depth.all()):
        missing = [name for name, d in zip(view_names, depth_maps) if d is None]
        raise DitrError(f"occlusion='depth' needs a depth map for every view; missing for {missing}")
    use_depth = has_depth & torch.tensor(config.occlusion in ("auto", "depth"), device=device)
    use_splat = ~use_depth & torch.tensor(config.occlusion in ("auto", "splat"), device=device)
    rule = occlusion_rule(config.occlusion, config.acquisition or acquisition)
    rules = ["none" if config.occlusion == "none" else "depth" if d else rule for d in use_depth.tolist()]

    # Project relative to the scene centre: float32 keeps its precision for far-from-origin scans.
    centre = points.double().mean(0) if n else torch.zeros(3, dtype=torch.float64, device=device)
    shift = torch.eye(4, dtype=torch.float64, device=device)
    shift[:3, 3] = centre
    w2c = (world_to_cam.double() @ shift).float()
    k = intrinsics.float()
    pts = (points.double() - centre).float()

    uv_store = torch.empty((nv, 2, n), dtype=torch.float32, device=device)  # see project_points
    depth = torch.empty((nv, n), dtype=torch.float32, device=device)
    in_frame = torch.empty((nv, n), dtype=torch.bool, device=device)
    for s in range(0, n, config.chunk_size):
        e = min(n, s + config.chunk_size)
        c_uv, c_z = project_points(pts[s:e], w2c, k, out=(uv_store[:, :, s:e], depth[:, s:e]))
        if stored.numel():  # c_uv views uv_store: the stored pixels replace the pinhole ones in place
            has = stored_has[:, s:e]
            uv_store[stored, :, s:e] = torch.where(has[:, None], stored_uv[:, :, s:e], uv_store[stored, :, s:e])
        in_frame[:, s:e] = _in_image(c_uv, c_z, image_sizes, config)
        if stored.numel():
            in_frame[stored, s:e] &= has
    uv = uv_store.transpose(1, 2)
    visible = in_frame.clone()
    warnings: list[str] = []
    sparse: list[str] = []
    if config.occlusion != "none" and n:
        if bool(use_depth.any()):
            views = torch.nonzero(use_depth).flatten().tolist()
            _depth_test(uv, depth, visible, views, depth_maps, depth_intrinsics, k, config)
        if bool(use_splat.any()) and rule == "surface":
            _splat_test(pts, uv, depth, visible, use_splat, k, w2c, image_sizes, config,
                        normals if config.use_normals else None)
        elif bool(use_splat.any()) and rule == "scan":
            sensor = torch.eye(4, dtype=torch.float64, device=device)
            if sensor_to_scene is not None:
                sensor = sensor_to_scene.to(device=device, dtype=torch.float64).clone()
            sensor[:3, 3] -= centre  # into the centred frame of pts
            _scan_test(pts, uv, depth, visible, use_splat, k, w2c, image_sizes, config, sensor.float())
        elif bool(use_splat.any()):
            spacing = _bracket_test(uv, depth, visible, use_splat, image_sizes, config)
            sparse = [name for name, s, used in zip(view_names, spacing.tolist(), use_splat.tolist())
                      if used and not s <= SPARSE_GAP_FRACTION]
            if sparse:
                warnings.append(sparse_warning(sparse, len(view_names)))
    return Correspondences(uv=uv, depth=depth, in_frame=in_frame, visible=visible,
                           view_names=list(view_names), image_sizes=image_sizes, rules=rules, warnings=warnings,
                           sparse_views=sparse)


def occlusion_rule(occlusion: Occlusion, acquisition: str | None) -> Rule:
    """The occlusion test for views without a depth map: the one place that decides
    (docs/projection.md#choosing-the-test).

    With ``auto``, LiDAR scans splat each return's beam cell (``scan``, :func:`_scan_test`) and
    structure-from-motion clouds are tested by bracketing (``sparse``, :func:`_bracket_test`): their
    points are too far apart for footprints sized by the surface spacing to close a surface without
    also covering its own points. Everything else (meshes, RGB-D and dense stereo clouds, scenes
    that do not say) splats footprints from the surface spacing (``surface``, :func:`_splat_test`),
    and so does ``splat`` always.
    """
    if occlusion == "auto" and acquisition == "lidar":
        return "scan"
    if occlusion == "auto" and acquisition == "sfm":
        return "sparse"
    return "surface"


def sparse_warning(views: list[str], total: int) -> str:
    """What ``ditr project`` and the importers say when points are too sparse for an occlusion test."""
    shown = ", ".join(views[:5]) + (f" and {len(views) - 5} more" if len(views) > 5 else "")
    return (f"{len(views)} of {total} views see points more than {SPARSE_GAP_FRACTION:.0%} of the image apart "
            f"({shown}): too sparse for any occlusion test to be trusted; points behind surfaces may count "
            "as visible there (denser points, e.g. a dense reconstruction, or depth maps fix this)")


def _stored_pixels(pixels: list[torch.Tensor | None], n: int, view_names: list[str], device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indices of the views with stored pixels, their pixels (S, 2, N) in :func:`project_points`'
    layout with NaN as 0, whether each point has one (S, N))."""
    for name, p in zip(view_names, pixels):
        if p is not None and tuple(p.shape) != (n, 2):
            raise DitrError(f"view {name}: stored pixels have shape {tuple(p.shape)}, expected ({n}, 2)")
    index = [i for i, p in enumerate(pixels) if p is not None]
    if not index:
        return (torch.zeros(0, dtype=torch.long, device=device), torch.zeros((0, 2, n), device=device),
                torch.zeros((0, n), dtype=torch.bool, device=device))
    uv = torch.stack([p.to(device=device, dtype=torch.float32) for p in pixels if p is not None]).transpose(1, 2)
    has = ~torch.isnan(uv).any(dim=1)
    return torch.tensor(index, device=device), torch.nan_to_num(uv, nan=0.0), has


def _depth_test(uv, depth, visible, views, depth_maps, depth_intrinsics, k, cfg) -> None:
    """Reference rule: visible iff |z - depth_map(u, v)| <= tolerance (missing depth fails).

    A depth camera with its own intrinsics shares the colour camera's pose (registered RGB-D), so
    its pixel follows from the colour pixel through the two intrinsics alone.
    """
    for i in views:
        cand = torch.nonzero(visible[i]).flatten()
        uv_i = uv[i, cand]
        dmap = depth_maps[i].to(device=uv.device, dtype=torch.float32)
        if depth_intrinsics[i] is not None:
            kd = depth_intrinsics[i].to(device=uv.device, dtype=torch.float32)
            x = (uv_i - k[i, :2, 2]) / torch.stack([k[i, 0, 0], k[i, 1, 1]])
            uv_i = x * torch.stack([kd[0, 0], kd[1, 1]]) + kd[:2, 2]
        hd, wd = dmap.shape
        u, v = uv_i[:, 0], uv_i[:, 1]
        inside = (u >= 0) & (u < wd) & (v >= 0) & (v < hd)
        observed = dmap[v.floor().long().clamp(0, hd - 1), u.floor().long().clamp(0, wd - 1)]
        visible[i, cand] = inside & ((depth[i, cand] - observed).abs() <= cfg.depth_tolerance)


def _splat_test(pts, uv, depth, visible, use_splat, k, w2c, sizes, cfg, normals) -> None:
    """Occlusion against a z-buffer splatted from the in-frame points themselves.

    With normals, two things that a bare z-buffer gets wrong are fixed: a point whose normal faces
    away from the camera is the back of a surface and hidden (this closes the gaps through which
    sparse points would "see" the inside of objects); and on a surface seen at incidence angle t,
    neighbours within the footprint radius r lie up to r tan(t) closer to the camera, so that much
    is added to the tolerance (capped at tan = 4) instead of hiding the surface from itself.
    """
    mask = visible & use_splat[:, None]
    vi, pi = torch.nonzero(mask, as_tuple=True)
    if vi.numel() == 0:
        return
    z = depth[vi, pi]
    focal = 0.5 * (k[vi, 0, 0] + k[vi, 1, 1])
    spacing = cfg.point_spacing if cfg.point_spacing is not None else estimate_point_spacing(pts)
    radius_px = _splat_radius_px(z, focal, cfg, spacing)
    tolerance = torch.full_like(z, cfg.depth_tolerance)
    facing = torch.ones_like(z, dtype=torch.bool)
    if normals is not None:
        centres = -(w2c[:, :3, :3].transpose(1, 2) @ w2c[:, :3, 3:]).squeeze(-1)  # (V, 3)
        ray = pts[pi] - centres[vi]
        cos = (normals.to(pts)[pi] * ray).sum(-1) / ray.norm(dim=-1).clamp(min=1e-9)
        facing = cos < 0.05
        tan = (1 - cos.square()).clamp(min=0).sqrt() / cos.abs().clamp(min=0.24)
        tolerance = tolerance + tan * radius_px * z / focal
    surface = _splatted_depth(vi, uv[vi, pi], z, radius_px, radius_px, sizes, _MAX_SPLAT_RADIUS)
    visible[vi, pi] = facing & (z <= surface + tolerance)


# ---------------------------------------------------------------------------------------- LiDAR scans
#: Footprints of up to this many buffer cells per axis are splatted at the buffer's full resolution
#: by the scan test (larger ones into coarser buffers, where they still span at least half as many).
_MAX_SCAN_CELLS = 8
#: The scan test's buffer is made finer than the image, per axis, until the median footprint spans at
#: least this many cells on each side of its point, but at most ``_MAX_SCAN_SUPERSAMPLE`` cells per pixel.
_SCAN_FOOTPRINT_CELLS = 2.0
_MAX_SCAN_SUPERSAMPLE = 4
#: The share of its beam cell a return's footprint covers, per axis (1: all of it, up to half-way to
#: the neighbouring returns); tuned on synthetic streets (docs/projection.md#lidar-scans-scan).
SCAN_CELL_SHARE = 1.0
#: A return on the next ring whose range differs by at most this fraction lies on the same surface.
_SAME_SURFACE = 0.25
#: A scan's beam spacing is taken per elevation band of this many degrees (an HDL-64E spaces its
#: upper beams closer than its lower ones) where the band holds enough points, else for the whole scan.
_BEAM_BAND_DEG = 1.0
_BEAM_BAND_POINTS = 20


def lidar_cells(local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """The angular cell of every return of a spinning LiDAR, measured from the scan itself.

    ``local``: (N, 3) points in the sensor frame (z the spin axis). Returns per point its azimuth and
    elevation (radians), the scan's azimuth step and per point the spacing of the beams at its
    elevation (radians). Both are typical gaps between neighbouring returns (:func:`_strip_gaps` on
    the angles), so neither the sensor model nor a ring index is needed, and beams without returns
    (sky) do not count. Last, the neighbouring returns on the rings below and above (2, N; -1: none).
    """
    az = torch.atan2(local[:, 1], local[:, 0])
    el = torch.atan2(local[:, 2], local[:, :2].norm(dim=1))
    mdeg = 1000.0 * 180.0 / math.pi  # integer millidegrees, >= 0
    a = torch.round((el + math.pi / 2) * mdeg).long()
    b = torch.round((az + math.pi) * mdeg).long()
    group = torch.zeros_like(a)
    _, (gaps_el, across), step_az, step_el = _strip_gaps(group, a, b, 1, 0.5)
    band = torch.div(a, 1000 * _BEAM_BAND_DEG, rounding_mode="floor").long()
    local_step, count = _group_quantile(gaps_el.min(0).values, band, int(band.max()) + 1, 0.5)
    per_point = torch.where(count[band] >= _BEAM_BAND_POINTS, local_step[band], step_el[0]).nan_to_num(0.0)
    # a strip may hold two azimuth steps: a neighbour less than half a beam spacing away is on the same ring
    across = torch.where((a[across.clamp(min=0)] - a).abs() >= per_point / 2, across, -1)
    return az, el, float(step_az[0].nan_to_num(0.0)) / mdeg, per_point / mdeg, across


def _scan_test(pts, uv, depth, visible, use, k, w2c, sizes, cfg, sensor) -> None:
    """Occlusion for a LiDAR scan: every return stands for the patch of surface its beam cell covers.

    A spinning LiDAR samples on a grid of angles, so each return is the surface over its cell: half an
    azimuth step and half a beam spacing on each side, at its range. That patch, projected into the
    camera, is the point's splat footprint: a rectangle (the patch's bounding box) as tall as half
    the way to the next ring and as wide as half the way to the next return of its ring, whatever the
    depth, however far the camera sits from the sensor. Sizing footprints from the surface spacing
    instead (the ``surface`` rule) fails on scans twice over: their spacing grows with range, and
    the road, seen at grazing angles, rises towards the horizon in the image, so any footprint that
    reaches the next ring covers road points metres farther away. The sensor cells of an occluder
    tile its silhouette and reach half a cell beyond its outermost returns (where its true outline
    lies between two beams), which is where the points that parallax hides sit; the cells of a
    surface never reach its neighbouring returns, so the road does not hide itself. ``sensor`` is
    the sensor's pose (4x4) in the centred frame of ``pts``.
    """
    mask = visible & use[:, None]
    vi, pi = torch.nonzero(mask, as_tuple=True)
    if vi.numel() == 0:
        return
    rotation, origin = sensor[:3, :3], sensor[:3, 3]
    local = (pts - origin) @ rotation
    az, el, step_az, step_el, (below, above) = lidar_cells(local)
    ranges = local.norm(dim=1)
    distance = ranges[pi, None]
    z = depth[vi, pi]
    point_uv = uv[vi, pi]
    project = k[vi] @ w2c[vi, :3, :]  # (P, 3, 4)

    def pinhole(x: torch.Tensor) -> torch.Tensor:  # the footprint's size, also where a view stores pixels
        h = project[:, :, :3] @ x.unsqueeze(-1) + project[:, :, 3:]
        return h[:, :2, 0] / h[:, 2:, 0].clamp(min=1e-6)

    centre = pinhole(pts[pi])
    half = torch.zeros_like(point_uv)
    for da in (-SCAN_CELL_SHARE / 2, SCAN_CELL_SHARE / 2):
        for de in (-SCAN_CELL_SHARE / 2, SCAN_CELL_SHARE / 2):
            a, e = az[pi] + da * step_az, el[pi] + de * step_el[pi]
            corner = torch.stack([e.cos() * a.cos(), e.cos() * a.sin(), e.sin()], dim=1) * distance
            half = torch.maximum(half, (pinhole(corner @ rotation.T + origin) - centre).abs())
    half = torch.minimum(half, sizes[vi].flip(1).to(half.dtype))  # a patch behind the camera spans the image
    # A surface the camera sees more obliquely than the sensor (a car's roof, level with the camera)
    # spans less of the image than its cell: no more than half-way to the next ring on it (scaled by
    # SCAN_CELL_SHARE like the rest of the footprint).
    to_below = torch.where(below[pi] >= 0, (ranges[below.clamp(min=0)] - ranges)[pi].abs(), math.inf)
    to_above = torch.where(above[pi] >= 0, (ranges[above.clamp(min=0)] - ranges)[pi].abs(), math.inf)
    chosen = torch.where(to_below <= to_above, below[pi], above[pi]).clamp(min=0)  # the likelier same surface
    same = (torch.minimum(to_below, to_above) <= _SAME_SURFACE * ranges[pi]) & (depth[vi, chosen] > 0)
    to_ring = (uv[vi, chosen, 1] - point_uv[:, 1]).abs() / 2
    half[:, 1] = torch.where(same, torch.minimum(half[:, 1], SCAN_CELL_SHARE * to_ring), half[:, 1])
    fine = _supersampling(half, vi, int(sizes.shape[0]))  # (V, 2) cells per pixel along u and v
    surface = _splatted_depth(vi, point_uv * fine[vi], z, half[:, 1] * fine[vi, 1], half[:, 0] * fine[vi, 0],
                              sizes * fine.flip(1).long(), _MAX_SCAN_CELLS)
    visible[vi, pi] = z <= surface + cfg.depth_tolerance


def _supersampling(half: torch.Tensor, vi: torch.Tensor, views: int) -> torch.Tensor:
    """Per view (V, 2), buffer cells per image pixel along u and v (powers of two) for footprints of
    ``half`` (P, 2) pixels of point-views in views ``vi``.

    A splatted footprint covers whole buffer cells: its half-width is rounded to cells and it is
    centred on its point's cell, so it may reach up to a cell and a half beyond its true extent. An
    azimuth step of 0.2 degrees spans about 2 pixels on a camera 800 pixels across with a 70 degree
    field of view and 1.2 at 480, so at image resolution that rounding alone would make footprints
    1.5 to 2.5 times as wide as the cells they stand for, and what the test hides would depend on the
    image size. On a buffer where the median footprint spans ``_SCAN_FOOTPRINT_CELLS`` cells on each
    side it is about exact. Each view's buffer follows its own footprints, so a view's visibility
    does not depend on which other views are projected with it.
    """
    typical = torch.stack([_group_quantile(half[:, axis], vi, views, 0.5)[0] for axis in (0, 1)], dim=1)
    typical = typical.nan_to_num(1.0).clamp(min=1e-6)
    steps = torch.ceil(torch.log2(_SCAN_FOOTPRINT_CELLS / typical)).clamp(0, math.log2(_MAX_SCAN_SUPERSAMPLE))
    return 2.0 ** steps


# ---------------------------------------------------------------------------------------- sparse clouds
#: The bracketing test of sparse clouds looks this many typical gaps (between neighbouring points in
#: the image) to either side of a point; its search strip is this many gaps across (each side); and
#: "typical" is this quantile of the gaps, so most points find neighbours within it.
BRACKET_REACH = 2.0
BRACKET_BAND = 0.5
GAP_QUANTILE = 0.75
#: Gaps are taken per image tile (rows x columns per view) holding this many points, else per view.
_GAP_TILES = (8, 8)
_GAP_TILE_POINTS = 12
#: A view whose points lie further apart than this fraction of its shorter side is too sparse for any
#: occlusion test: it is tested all the same, and the correspondences carry a warning.
SPARSE_GAP_FRACTION = 0.1


def _neighbour_gaps(strip: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point, the distances along ``position`` to the nearest other points of its ``strip`` before
    and after it (inf where there is none) and their indices (-1): both (2, P)."""
    order = torch.argsort(strip * (int(position.max()) + 1) + position, stable=True)  # ties by input order
    s, q = strip[order], position[order]
    same = s[1:] == s[:-1]
    step = torch.where(same, (q[1:] - q[:-1]).float(), math.inf)
    gaps = torch.full((2, q.numel()), math.inf, device=q.device)
    index = torch.full((2, q.numel()), -1, dtype=torch.long, device=q.device)
    gaps[0, order[1:]], index[0, order[1:]] = step, torch.where(same, order[:-1], -1)
    gaps[1, order[:-1]], index[1, order[:-1]] = step, torch.where(same, order[1:], -1)
    return gaps, index


def _group_quantile(values: torch.Tensor, group: torch.Tensor, groups: int, q: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``q`` quantile of the finite ``values`` per group (nan for a group without any) and how many there were."""
    finite = torch.isfinite(values)
    values, group = values[finite], group[finite]
    order = torch.argsort(values)
    order = order[torch.argsort(group[order], stable=True)]
    counts = torch.bincount(group, minlength=groups)
    out = torch.full((groups,), math.nan, device=values.device)
    if values.numel():
        pick = (torch.cumsum(counts, 0) - counts + ((counts - 1).clamp(min=0) * q).long()).clamp(max=values.numel() - 1)
        out = torch.where(counts > 0, values[order[pick]], out)
    return out, counts


def _strip_gaps(group: torch.Tensor, a: torch.Tensor, b: torch.Tensor, groups: int, q: float
                ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], torch.Tensor,
                           torch.Tensor]:
    """Gaps between neighbouring points on two integer axes (image rows and columns, or a LiDAR's
    elevation and azimuth), per ``group`` (a view).

    A point's gaps along ``b`` are the distances to the nearest points before and after it in a
    strip of ``a`` around it; the strip is half the typical gap along ``a`` to each side, and vice
    versa, which a few alternating rounds settle (LiDAR rings are a few pixels apart along a ring and
    tens between rings; scattered points alike on both axes). Typical is the ``q``
    quantile per group. Returns (gaps, neighbour indices) along b and along a, each (2, P) as
    :func:`_neighbour_gaps` gives them, then typical_b (G,) and typical_a (G,).
    """
    half_a = torch.ones(groups, dtype=torch.long, device=a.device)
    both = torch.cat([group, group])
    span_a, span_b = int(a.max()) + 2, int(b.max()) + 2
    for _ in range(3):
        along_b = _neighbour_gaps(group * span_a + a // (2 * half_a[group] + 1), b)
        typical_b = _group_quantile(along_b[0].flatten(), both, groups, q)[0]
        half_b = torch.ceil(typical_b.nan_to_num(1.0) / 2).long()
        along_a = _neighbour_gaps(group * span_b + b // (2 * half_b[group] + 1), a)
        typical_a = _group_quantile(along_a[0].flatten(), both, groups, q)[0]
        half_a = torch.ceil(typical_a.nan_to_num(1.0) / 2).long()
    return along_b, along_a, typical_b, typical_a


def _min_before(grid: torch.Tensor, vi: torch.Tensor, a: torch.Tensor, c: torch.Tensor,
                length: torch.Tensor) -> torch.Tensor:
    """Per point, the minimum of ``grid[vi, a - length + 1 .. a, c]`` (cells before row 0 are empty).

    Doubling: after step k every cell holds the minimum of the 2^k cells ending at it, and a window
    of any length n is the minimum of two such blocks, 2^floor(log2 n) long, at its two ends.
    """
    level = torch.floor(torch.log2(length.float())).long()
    out = torch.full(a.shape, math.inf, device=grid.device)
    m = grid
    for k in range(int(level.max()) + 1 if level.numel() else 0):
        shift = 2 ** (k - 1)
        if k and shift < m.shape[1]:
            m = torch.minimum(m, F.pad(m[:, :-shift], (0, 0, shift, 0), value=math.inf))
        sel = torch.nonzero(level == k).flatten()
        if sel.numel():
            start = (a[sel] - length[sel] + 2 ** k).clamp(min=0)
            out[sel] = torch.minimum(m[vi[sel], a[sel], c[sel]], m[vi[sel], start, c[sel]])
    return out


def _bracketed(z: torch.Tensor, vi: torch.Tensor, along: torch.Tensor, across: torch.Tensor,
               extent: tuple[int, int], reach: torch.Tensor, band: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Whether points nearer than ``z - tolerance`` lie both before and after each point along one image axis.

    ``along`` / ``across`` are pixel coordinates; ``reach`` (per point) and ``band`` (per view, half
    width of the search strip) are pixels. The buffer is coarsened along each axis so that the strip
    spans about two cells and the reach about eight, which keeps the work small for sparse points.
    """
    nv = int(band.shape[0])
    step_across = max(1, int(band.min()) // 2)
    step_along = max(1, int(reach.kthvalue(max(1, reach.numel() // 10)).values) // 8)
    n_along, n_across = extent[0] // step_along + 1, extent[1] // step_across + 1
    a, c = along // step_along, across // step_across
    grid = torch.full((nv * n_along * n_across,), math.inf, device=z.device)
    grid.scatter_reduce_(0, (vi * n_along + a) * n_across + c, z, reduce="amin")
    grid = grid.view(nv, n_along, n_across)
    cells = torch.round(band / step_across).long()
    for w in torch.unique(cells).tolist():  # the search strip: a min filter across
        if w > 0:
            sel = cells == w
            grid[sel] = -F.max_pool2d(-grid[sel].unsqueeze(1), (1, 2 * w + 1), 1, (0, w)).squeeze(1)
    length = torch.ceil(reach / step_along).long().clamp(min=1)
    before = _min_before(grid, vi, a, c, length)  # includes the point's own cell
    flipped = n_along - 1 - a
    after = torch.where(flipped > 0, _min_before(grid.flip(1), vi, (flipped - 1).clamp(min=0), c, length), math.inf)
    limit = z - tolerance
    return (before < limit) & (after < limit)


def _bracket_test(uv, depth, visible, use, sizes, cfg) -> torch.Tensor:
    """Occlusion for sparse clouds (structure from motion): hidden iff nearer points bracket the point.

    A z-buffer splatted from sparse points hides surfaces from themselves: footprints must be as
    large as the gaps between points to close a surface, and then, on a surface seen at a grazing
    angle (floor, walls), they cover its own points farther away. Here a point is hidden only when
    points nearer than itself (by more than the tolerance) lie on both sides of it, above and below
    or left and right, within ``BRACKET_REACH`` typical gaps: along any image line depth changes
    monotonically across a plane, so a surface never brackets its own points, however slanted, while
    a point behind an object has the object on both sides. Gaps are measured in the image
    (:func:`_strip_gaps`, per tile), so no point spacing has to be known. Returns per view the
    typical gap as a fraction of the image's shorter side (nan: no gaps).
    """
    mask = visible & use[:, None]
    vi, pi = torch.nonzero(mask, as_tuple=True)
    if vi.numel() == 0:
        return torch.full(use.shape, math.nan, device=uv.device)
    nv = int(sizes.shape[0])
    z = depth[vi, pi]
    point_uv = uv[vi, pi]
    col = point_uv[:, 0].long().clamp(min=0).minimum(sizes[vi, 1] - 1)
    row = point_uv[:, 1].long().clamp(min=0).minimum(sizes[vi, 0] - 1)
    (gaps_u, _), (gaps_v, _), view_u, view_v = _strip_gaps(vi, row, col, nv, GAP_QUANTILE)
    th, tw = _GAP_TILES
    tile = torch.cat([(vi * th + row * th // sizes[vi, 0]) * tw + col * tw // sizes[vi, 1]] * 2)
    local = []
    for gaps, view in ((gaps_u, view_u), (gaps_v, view_v)):
        value, count = _group_quantile(gaps.flatten(), tile, nv * th * tw, GAP_QUANTILE)
        local.append(torch.where(count[tile[:len(vi)]] >= _GAP_TILE_POINTS, value[tile[:len(vi)]], view[vi]))
    t = torch.nonzero(local[0].isfinite() & local[1].isfinite()).flatten()
    band_u = torch.ceil(BRACKET_BAND * view_u.nan_to_num(1.0))
    band_v = torch.ceil(BRACKET_BAND * view_v.nan_to_num(1.0))
    hidden = torch.zeros_like(z, dtype=torch.bool)
    for view in torch.unique(vi[t]).tolist():  # each view on its own grid: independent of the other views
        s = t[vi[t] == view]
        one, extent = torch.zeros_like(s), (int(sizes[view, 0]), int(sizes[view, 1]))
        hidden[s] = _bracketed(z[s], one, row[s], col[s], extent, BRACKET_REACH * local[1][s],
                               band_u[view:view + 1], cfg.depth_tolerance)
        hidden[s] |= _bracketed(z[s], one, col[s], row[s], extent[::-1], BRACKET_REACH * local[0][s],
                                band_v[view:view + 1], cfg.depth_tolerance)
    visible[vi, pi] = ~hidden
    return (view_u * view_v).sqrt() / sizes.min(dim=1).values


def project_scene(scene: Scene, config: ProjectionConfig = ProjectionConfig(),
                  device: str | torch.device = "cpu") -> Correspondences:
    """Correspondences between a scene's points and all of its views (reads depth maps if needed;
    a view's stored ``pixels`` replace its pinhole projection)."""
    device = torch.device(device)
    views = scene.views
    points = torch.from_numpy(np.ascontiguousarray(scene.coord, dtype=np.float32)).to(device)
    if not views:
        empty = torch.zeros((0, scene.num_points), device=device)
        return Correspondences(uv=empty.new_zeros((0, scene.num_points, 2)), depth=empty,
                               in_frame=empty.bool(), visible=empty.bool(), view_names=[],
                               image_sizes=torch.zeros((0, 2), dtype=torch.long, device=device))
    w2c = torch.from_numpy(np.stack([v.world_to_cam for v in views])).to(device)
    k = torch.from_numpy(np.stack([v.intrinsics for v in views])).to(device)
    sizes = torch.tensor([[v.height, v.width] for v in views], device=device)
    depth_maps: list[torch.Tensor | None] = [None] * len(views)
    depth_k: list[torch.Tensor | None] = [None] * len(views)
    if config.occlusion in ("auto", "depth"):
        for i, v in enumerate(views):
            d = v.read_depth()
            if d is not None:
                depth_maps[i] = torch.from_numpy(d).to(device)
                if v.depth_intrinsics is not None:
                    depth_k[i] = torch.from_numpy(v.depth_intrinsics).to(device)
    normal_array = scene.attributes.get("normal")
    normals = torch.from_numpy(normal_array).to(device) if normal_array is not None else None
    pixels = [torch.from_numpy(v.pixels).to(device) if v.pixels is not None else None for v in views]
    sensor = scene.sensor_to_scene
    return compute_correspondences(points, w2c, k, sizes, config, depth_maps, depth_k, [v.name for v in views],
                                   normals, pixels, scene.acquisition,
                                   None if sensor is None else torch.from_numpy(sensor))
