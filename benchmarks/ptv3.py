"""PTv3 ScanNet-config speed and memory on surface-like synthetic rooms.

Prints one JSON object per line (docs/design.md#benchmarks): ``train_step_s`` (forward + loss + backward + AdamW
step), ``infer_s`` (eval forward under inference_mode) and ``peak_mb`` (peak resident memory of the
process that ran the case). Every case runs in a fresh subprocess so peak memory is per case. The
same cases with the attention written out as softmax(QK^T)V report with ``case`` prefixed
``reference:`` so the ratio comes from one run on one (possibly noisy) machine. At the largest size
the fp32 cases are repeated under bf16 autocast (``ptv3-scannet-bf16-...``). Times are the median of
the timed repeats after one warm-up step.

    python benchmarks/ptv3.py            # 25k / 50k / 100k points
    python benchmarks/ptv3.py --quick    # 25k points, one timed repeat (about a minute)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

GRID = 0.02


def room_points(num_points: int, seed: int = 0) -> np.ndarray:
    """Voxel coordinates of a synthetic room (floor, walls, ceiling, boxes) cropped to N points.

    Surfaces are sampled densely, voxelised at 2 cm (one point per voxel, like the training
    pipeline's grid sampling) and cut to the ``num_points`` voxels nearest to a point in the
    room, like the reference's SphereCrop.
    """
    rng = np.random.default_rng(seed)
    size = np.array([7.0, 6.0, 3.0])
    quads = [  # (origin, edge u, edge v)
        ((0, 0, 0), (size[0], 0, 0), (0, size[1], 0)),
        ((0, 0, size[2]), (size[0], 0, 0), (0, size[1], 0)),
        ((0, 0, 0), (size[0], 0, 0), (0, 0, size[2])),
        ((0, size[1], 0), (size[0], 0, 0), (0, 0, size[2])),
        ((0, 0, 0), (0, size[1], 0), (0, 0, size[2])),
        ((size[0], 0, 0), (0, size[1], 0), (0, 0, size[2])),
    ]
    for _ in range(12):  # furniture-like boxes standing on the floor
        dims = rng.uniform([0.3, 0.3, 0.3], [1.8, 1.2, 1.5])
        lo = np.append(rng.uniform([0, 0], size[:2] - dims[:2]), 0.0)
        dx, dy, dz = np.diag(dims)
        for origin, u, v in ((lo, dx, dy), (lo + dz, dx, dy), (lo, dx, dz), (lo + dy, dx, dz),
                             (lo, dy, dz), (lo + dx, dy, dz)):
            quads.append((origin, u, v))
    pts = []
    for origin, u, v in quads:
        u, v = np.asarray(u, float), np.asarray(v, float)
        area = np.linalg.norm(np.cross(u, v))
        n = int(area / (GRID * GRID) * 2.5)
        ab = rng.random((n, 2))
        pts.append(np.asarray(origin, float) + ab[:, :1] * u + ab[:, 1:] * v + rng.normal(0, 0.003, (n, 3)))
    cloud = np.concatenate(pts)
    grid = np.unique(np.floor((cloud - cloud.min(0)) / GRID).astype(np.int64), axis=0)
    centre = grid[rng.integers(len(grid))]
    keep = np.argsort(((grid - centre) ** 2).sum(1))[:num_points]
    grid = grid[keep]
    return grid - grid.min(0)


def run_case(mode: str, points: int, attention: str, precision: str, repeats: int) -> dict[str, float]:
    """Time one configuration in this process; returns seconds per step and peak RSS in MB."""
    from ditr.models import create_segmentor

    torch.manual_seed(0)
    grid = torch.from_numpy(room_points(points))
    n = len(grid)
    data = {"grid_coord": grid, "feat": torch.randn(n, 6), "offset": torch.tensor([n])}
    model = create_segmentor("scannet", attn_backend=attention, conv_backend="torch")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    times, cpu = [], []
    if mode == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        target = torch.randint(0, 20, (n,))
        for _ in range(repeats + 1):
            start, cpu_start = time.perf_counter(), time.process_time()
            with autocast:
                logits = model(data)
            loss = torch.nn.functional.cross_entropy(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
    else:
        model.eval()
        with torch.inference_mode(), autocast:
            for _ in range(repeats + 1):
                start, cpu_start = time.perf_counter(), time.process_time()
                model(data)
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - cpu_start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": statistics.median(times[1:]),
        "cpu_seconds": statistics.median(cpu[1:]),
        "peak_mb": peak_mb,
        "points": n,
        "loadavg_1min": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="25k points, one timed repeat")
    parser.add_argument("--points", type=int, nargs="*", help="point counts (default 25000 50000 100000)")
    parser.add_argument("--no-reference", action="store_true", help="skip the naive-attention cases")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16-autocast cases (largest size only)")
    parser.add_argument("--mem-limit-gb", type=float, default=16.0,
                        help="address-space cap per case, so an oversized naive-attention case fails "
                             "instead of pushing a shared machine into the OOM killer")
    parser.add_argument("--child", nargs=5, metavar=("MODE", "POINTS", "ATTN", "PRECISION", "REPEATS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, points, attention, precision, repeats = args.child
        limit = int(args.mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(run_case(mode, int(points), attention, precision, int(repeats))))
        return
    sizes = args.points or ([25_000] if args.quick else [25_000, 50_000, 100_000])
    repeats = 1 if args.quick else 2
    # On a shared CPU, OpenMP's default spin-waiting makes every parallel region wait for threads
    # whose core is busy elsewhere (10x slowdowns seen); passive waiting keeps 2 threads useful.
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for points in sizes:
        variants = [("sdpa", "fp32", "ptv3-scannet-")]
        if not args.no_reference:
            variants.append(("naive", "fp32", "reference:naive-attention-"))
        if not (args.no_bf16 or args.quick) and points == max(sizes):
            variants.append(("sdpa", "bf16", "ptv3-scannet-bf16-"))
        for attention, precision, prefix in variants:
            for mode, metric in (("infer", "infer_s"), ("train", "train_step_s")):
                cmd = [sys.executable, os.path.abspath(__file__), "--mem-limit-gb", str(args.mem_limit_gb),
                       "--child", mode, str(points), attention, precision, str(repeats)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                case = f"{prefix}{mode}-{points // 1000}k"
                if proc.returncode != 0:
                    print(f"case {case} failed: {proc.stderr.strip()[-400:]}", file=sys.stderr, flush=True)
                    continue
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                # Context for reading the numbers on a shared machine; stdout stays pure JSON lines.
                print(f"# {case}: cpu {result['cpu_seconds']:.2f} s per step (both threads), "
                      f"load average {result['loadavg_1min']:.1f}", file=sys.stderr, flush=True)
                for name, value, unit in ((metric, result["seconds"], "s"), ("peak_mb", result["peak_mb"], "MB")):
                    line = {"bench": "ptv3", "case": case, "metric": name, "value": round(value, 4), "unit": unit}
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
