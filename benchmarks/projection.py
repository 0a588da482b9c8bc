"""Projection throughput: point-views per second for 1M points x 10 views (docs/design.md#benchmarks).

Cases: geometry only (occlusion none), occlusion against depth maps, occlusion against the splatted
z-buffer. A straightforward per-view NumPy implementation of the geometric test is timed in the
same run as ``reference:numpy-per-view`` so that the ratio holds on a noisy machine.

    python benchmarks/projection.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from ditr.projection import ProjectionConfig, compute_correspondences


def make_rig(n: int, views: int, h: int, w: int, seed: int = 0):
    """Points on the walls and floor of a 8 x 6 x 3 m room, cameras in the middle looking around."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand((n, 3), generator=g) * torch.tensor([8.0, 6.0, 3.0])
    face = torch.randint(0, 5, (n,), generator=g)
    pts[face == 0, 0] = 0.0
    pts[face == 1, 0] = 8.0
    pts[face == 2, 1] = 0.0
    pts[face == 3, 1] = 6.0
    pts[face == 4, 2] = 0.0
    w2c, k = [], []
    for i in range(views):
        yaw = 2 * math.pi * i / views
        fwd = torch.tensor([math.cos(yaw), math.sin(yaw), -0.2])
        fwd = fwd / fwd.norm()
        right = torch.linalg.cross(fwd, torch.tensor([0.0, 0.0, 1.0]))
        right = right / right.norm()
        down = torch.linalg.cross(fwd, right)
        c2w = torch.eye(4, dtype=torch.float64)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2] = right, down, fwd
        c2w[:3, 3] = torch.tensor([4.0, 3.0, 1.5])
        w2c.append(torch.linalg.inv(c2w))
        k.append(torch.tensor([[0.8 * w, 0, w / 2], [0, 0.8 * w, h / 2], [0, 0, 1]], dtype=torch.float64))
    return pts, torch.stack(w2c), torch.stack(k), torch.tensor([[h, w]] * views)


def numpy_reference(pts: np.ndarray, w2c: np.ndarray, k: np.ndarray, h: int, w: int):
    """What one writes first: loop over views, project with NumPy, test bounds; same outputs."""
    nv = w2c.shape[0]
    uv = np.empty((nv, pts.shape[0], 2), np.float32)
    depth = np.empty((nv, pts.shape[0]), np.float32)
    mask = np.empty((nv, pts.shape[0]), bool)
    for v in range(nv):
        cam = pts @ w2c[v, :3, :3].T.astype(np.float32) + w2c[v, :3, 3].astype(np.float32)
        z = cam[:, 2]
        uv[v, :, 0] = k[v, 0, 0] * cam[:, 0] / z + k[v, 0, 2]
        uv[v, :, 1] = k[v, 1, 1] * cam[:, 1] / z + k[v, 1, 2]
        depth[v] = z
        mask[v] = (z > 0) & (uv[v, :, 0] >= 0) & (uv[v, :, 0] < w) & (uv[v, :, 1] >= 0) & (uv[v, :, 1] < h)
    return uv, depth, mask


def timeit(fn, repeat: int) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="200k points, fewer repeats")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--points", type=int, default=None)
    ap.add_argument("--views", type=int, default=10)
    args = ap.parse_args()
    n = args.points or (200_000 if args.quick else 1_000_000)
    h, w = 480, 640
    repeat = 2 if args.quick else 5
    pts, w2c, k, sizes = make_rig(n, args.views, h, w)
    dev = torch.device(args.device)
    pts_d, w2c_d, k_d = pts.to(dev), w2c.to(dev), k.to(dev)
    # Depth maps rendered from the rig's own geometry: the room's walls, by splatting once.
    dense = compute_correspondences(pts_d, w2c_d, k_d, sizes, ProjectionConfig(occlusion="none"))
    depth_maps = []
    for v in range(args.views):
        dm = torch.zeros(h * w, device=dev)
        sel = dense.in_frame[v]
        idx = dense.uv[v, sel, 1].long() * w + dense.uv[v, sel, 0].long()
        dm.scatter_reduce_(0, idx, dense.depth[v, sel], reduce="amax", include_self=False)
        depth_maps.append(dm.view(h, w))
    point_views = n * args.views
    cases = {
        "project": lambda: compute_correspondences(pts_d, w2c_d, k_d, sizes, ProjectionConfig(occlusion="none")),
        "project+depth-occlusion": lambda: compute_correspondences(
            pts_d, w2c_d, k_d, sizes, ProjectionConfig(occlusion="depth"), depth_maps=depth_maps),
        "project+splat-occlusion": lambda: compute_correspondences(
            pts_d, w2c_d, k_d, sizes, ProjectionConfig(occlusion="splat", point_spacing=0.02)),
    }
    label = f"{n // 1000}k-points-x{args.views}-views"
    for case, fn in cases.items():
        t = timeit(fn, repeat)
        print(json.dumps({"bench": "projection", "case": f"{case}-{label}", "metric": "point_views_per_s",
                          "value": round(point_views / t), "unit": "point-views/s", "device": str(dev),
                          "threads": torch.get_num_threads()}))
    pts_np, w2c_np, k_np = pts.numpy(), w2c.numpy(), k.numpy()
    t = timeit(lambda: numpy_reference(pts_np, w2c_np, k_np, h, w), repeat)
    print(json.dumps({"bench": "projection", "case": f"reference:numpy-per-view-{label}", "metric": "point_views_per_s",
                      "value": round(point_views / t), "unit": "point-views/s", "device": "cpu"}))


if __name__ == "__main__":
    main()
