"""Point -> pixel correspondences with visibility, batched over all views at once.

See docs/design.md#projection-and-visibility.

For every (view, point) pair we compute the pixel ``(u, v)`` (u = column, v = row, continuous, in the
original image), the camera depth ``z`` and whether the point is visible: in front of the camera,
inside the image, inside the optional depth gate, and not occluded. The pixel comes from the pinhole
model, or from the view's stored per-point ``pixels`` where the scene has them (the dataset's own
projection, with lens distortion and rolling shutter; docs/scene-format.md#per-point-pixels): the
depth ``z`` is then still the pose's, which those effects do not change. Occlusion is tested

* against the view's depth map when it has one (``|z - depth| <= tolerance``, the reference rule), or
* against a depth buffer splatted from the points themselves: each point covers a small disc of
  pixels whose radius follows its projected spacing, so that surfaces are closed and points behind
  them fail the test. This is what makes occlusion possible for scans without depth maps and for
  LiDAR rigs, where the reference does none.

Everything is vectorised torch on any device; points are processed in chunks to bound memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from . import checks
from .errors import ConfigError, DitrError
from .scene import Scene

Occlusion = Literal["auto", "depth", "splat", "none"]

#: Largest splat radius (in depth-buffer pixels); larger footprints use a coarser buffer instead.
_MAX_SPLAT_RADIUS = 3


@dataclass(frozen=True)
class ProjectionConfig:
    """How visibility is decided. Defaults follow the reference's indoor rule without depth gating.

    Attributes:
        occlusion: ``auto`` uses a view's depth map when it has one and the splatted buffer
            otherwise; ``depth`` requires depth maps; ``splat`` always splats; ``none`` skips it.
        depth_tolerance: metres a point may lie behind the observed surface and still count as it.
        min_depth / max_depth: depth gate in metres (ScanNet's reference uses 1.0 and 4.0).
        point_spacing: typical distance between neighbouring points in metres, which sets the
            splat footprint; estimated from the points when None.
        splat_radius_px: a fixed splat radius in image pixels instead (right for LiDAR, whose
            points are evenly spaced in angle rather than on surfaces).
        splat_scale: footprint radius as a multiple of the projected point spacing.
        use_normals: in the splatted test, use point normals where the scene has them: points
            facing away from the camera are hidden, and the tolerance grows on grazing surfaces.
        chunk_size: points per chunk; bounds the temporary memory to about chunk_size x views.
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


@dataclass
class Correspondences:
    """Per (view, point) pixel coordinates, depth and visibility.

    ``in_frame`` is the geometric test alone (in front, inside the image and the depth gate; for a
    view with stored pixels also: the point has one); ``visible`` additionally passed the occlusion
    test, so ``in_frame & ~visible`` are occluded. ``uv`` is meaningful only where ``in_frame``.
    """

    uv: torch.Tensor  # (V, N, 2) float32
    depth: torch.Tensor  # (V, N) float32
    in_frame: torch.Tensor  # (V, N) bool
    visible: torch.Tensor  # (V, N) bool
    view_names: list[str]
    image_sizes: torch.Tensor  # (V, 2) long, (height, width)

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
        that the occlusion test removed (0 with occlusion "none"), in total and per view.
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
    """Z-buffers of all views at one stride, splatted from points with footprints of a few cells.

    A point covers a square of ``radius`` buffer cells around its own. Splatting every point into its
    whole square is the same as, per radius r, a scatter-min of the point's depth into its centre
    cell followed by a (2r+1)^2 min filter; the radii are merged by a minimum. This keeps the work at
    a few scatters and separable pooling passes however many points there are.
    """

    def __init__(self, sizes: torch.Tensor, stride: int, device: torch.device):
        self.stride = stride
        self.views = int(sizes.shape[0])
        self.hb = int(math.ceil(int(sizes[:, 0].max()) / stride))
        self.wb = int(math.ceil(int(sizes[:, 1].max()) / stride))
        self.cells = self.views * self.hb * self.wb
        self.device = device

    def _cells(self, view: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        col = (uv[:, 0] / self.stride).long().clamp(0, self.wb - 1)
        row = (uv[:, 1] / self.stride).long().clamp(0, self.hb - 1)
        return (view * self.hb + row) * self.wb + col

    def render(self, view: torch.Tensor, uv: torch.Tensor, z: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """The splatted depth per cell (inf where no point reaches)."""
        cells = self._cells(view, uv)
        merged = torch.full((self.cells,), math.inf, device=self.device)
        for r in torch.unique(radius).tolist():
            sel = radius == r
            level = torch.full((self.cells,), math.inf, device=self.device)
            level.scatter_reduce_(0, cells[sel], z[sel], reduce="amin")
            if r > 0:  # a square min filter, separably: a row pass then a column pass
                grid = -level.view(self.views, 1, self.hb, self.wb)
                grid = F.max_pool2d(grid, kernel_size=(1, 2 * r + 1), stride=1, padding=(0, r))
                level = -F.max_pool2d(grid, kernel_size=(2 * r + 1, 1), stride=1, padding=(r, 0)).reshape(-1)
            merged = torch.minimum(merged, level)
        return merged

    def lookup(self, buffer: torch.Tensor, view: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        return buffer[self._cells(view, uv)]


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
    if config.occlusion != "none" and n:
        if bool(use_depth.any()):
            views = torch.nonzero(use_depth).flatten().tolist()
            _depth_test(uv, depth, visible, views, depth_maps, depth_intrinsics, k, config)
        if bool(use_splat.any()):
            _splat_test(pts, uv, depth, visible, use_splat, k, w2c, image_sizes, config,
                        normals if config.use_normals else None)
    return Correspondences(uv=uv, depth=depth, in_frame=in_frame, visible=visible,
                           view_names=list(view_names), image_sizes=image_sizes)


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
    # Footprints of up to _MAX_SPLAT_RADIUS pixels are splatted at full resolution; larger ones
    # (points close to the camera) into buffers of stride 2, 4, ... where they span 2-3 cells, so
    # every point closes its own neighbourhood and the min filters stay small.
    level = torch.ceil(torch.log2(radius_px.clamp(min=1e-6) / _MAX_SPLAT_RADIUS)).clamp(0, 10).long()
    point_uv = uv[vi, pi]
    full = _SplatBuffer(sizes, 1, uv.device)
    surface = torch.full((full.views, full.hb, full.wb), math.inf, device=uv.device)
    for e in torch.unique(level).tolist():
        sel = level == e
        buf = _SplatBuffer(sizes, 2 ** e, uv.device)
        radius = torch.round(radius_px[sel] / 2 ** e).long().clamp(0, _MAX_SPLAT_RADIUS)
        zbuf = buf.render(vi[sel], point_uv[sel], z[sel], radius).view(buf.views, buf.hb, buf.wb)
        if e > 0:  # nearest-neighbour upsampling to full resolution
            zbuf = zbuf.repeat_interleave(2 ** e, 1).repeat_interleave(2 ** e, 2)[:, :full.hb, :full.wb]
        surface = torch.minimum(surface, zbuf)
    cells = full._cells(vi, point_uv)
    ok = facing & (z <= surface.view(-1)[cells] + tolerance)
    visible[vi, pi] = ok


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
    return compute_correspondences(points, w2c, k, sizes, config, depth_maps, depth_k,
                                   [v.name for v in views], normals, pixels)
