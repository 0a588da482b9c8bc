"""Pixel -> patch cell -> point: the per-sample cost of the image-feature lookup and of the dense lift.

Cases (one synthetic sample of ``--points`` points seen by ``--views`` 480x640 views whose patch
grids are 30 x 40, as ScanNet at 420x560 with patch 14):

* ``build_lookup/<fusion>``: what every data-loader worker does per sample (``img_index``,
  ``img_weight``, ``img_seen`` from the correspondences), for each view fusion;
* ``lookup``: the gather on the model's side (``lookup_image_features``) for a ViT-S table;
* ``lift/<fusion>``: the dense (N, D) lift of the scene-level helpers (renders);
* ``dataset-get``: ``SceneDataset.get`` of a synthetic room with cached features (tiny VFM):
  projection, transforms, the cached table and the lookup together.

Timings are the best of ``--repeats`` runs after a warm-up, in wall seconds (``value``) and in CPU
seconds of this process (``cpu_ms``: much less sensitive to other processes on a shared machine;
``--threads 1`` makes it comparable across runs).

    python benchmarks/lifting.py [--quick] [--points N] [--views V]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ditr.lifting import build_lookup, cell_offsets, lift, lookup_image_features  # noqa: E402

FUSIONS = ("last", "random", "nearest", "mean")
IMAGE = (480, 640)
PATCHES = (30, 40)


def emit(case: str, metric: str, value: float, unit: str, **extra) -> None:
    if isinstance(value, tuple):  # (wall s, cpu s) of best_of
        extra["cpu_ms"] = round(1e3 * value[1], 3)
        value = 1e3 * value[0]
    print(json.dumps({"bench": "lifting", "case": case, "metric": metric, "value": round(value, 5), "unit": unit,
                      "threads": torch.get_num_threads(), **extra}), flush=True)


def best_of(fn, repeats: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds) over ``repeats`` calls after a warm-up."""
    fn()
    best, best_cpu = math.inf, math.inf
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, best_cpu


def sample(n: int, views: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    uv = (rng.random((views, n, 2)) * [IMAGE[1], IMAGE[0]]).astype(np.float32)
    visible = rng.random((views, n)) < 0.3
    depth = (rng.random((views, n)) * 4 + 0.5).astype(np.float32)
    sizes = np.array([IMAGE] * views, np.int64)
    grids = np.array([PATCHES] * views, np.int64)
    return uv, visible, depth, sizes, grids


def bench_lookup(n: int, views: int, repeats: int) -> None:
    uv, visible, depth, sizes, grids = sample(n, views)
    label = f"{n // 1000}k-points-x{views}-views"
    for fusion in FUSIONS:
        t = best_of(lambda f=fusion: build_lookup(uv, visible, depth, sizes, grids, f, np.random.default_rng(0)),
                    repeats)
        emit(f"build_lookup/{fusion}/{label}", "ms", t, "ms")
    table = torch.randn(int(cell_offsets(grids)[-1]), 384).half()
    for fusion in ("last", "mean"):
        index, weight, _ = build_lookup(uv, visible, depth, sizes, grids, fusion, np.random.default_rng(0))
        index_t, weight_t = torch.from_numpy(index), torch.from_numpy(weight)
        t = best_of(lambda i=index_t, w=weight_t: lookup_image_features(table, i, w), repeats)
        emit(f"lookup/{fusion}/{label}/D384", "ms", t, "ms")
    grid_list = [torch.randn(64, *PATCHES) for _ in range(views)]
    uv_t = torch.from_numpy(uv)
    sizes_t = torch.from_numpy(sizes)
    vis_t = torch.from_numpy(visible)
    last = torch.zeros(views, n)
    best = torch.where(vis_t, torch.arange(1, views + 1)[:, None], 0).argmax(0)
    last.scatter_(0, best[None], 1.0)
    last *= vis_t.any(0, keepdim=True)
    mean = vis_t.float() / vis_t.sum(0, keepdim=True).clamp(min=1)
    for fusion, weights in (("last", last), ("mean", mean)):
        t = best_of(lambda w=weights: lift(grid_list, uv_t, sizes_t, w), repeats)
        emit(f"lift/{fusion}/{label}/D64", "ms", t, "ms")


def bench_dataset(repeats: int, points: int) -> None:
    from ditr.data import SceneDataset
    from ditr.io.synthetic import ensure_rooms
    from ditr.vfm.extract import fill_scene_features

    with tempfile.TemporaryDirectory(prefix="ditr-lifting-bench-") as tmp:
        root = Path(tmp)
        model = "dinov2-tiny-random-reg"
        rooms = ensure_rooms(root / "rooms", 1, 0, points, 8)
        fill_scene_features(rooms, model, root / "features")
        config = {"dataset": {"input_features": ["color", "normal"]}, "model": {"name": "ditr"},
                  "images": {"views_per_sample": 8, "view_strategy": "last"},
                  "vfm": {"model": model, "cache": str(root / "features")},
                  "transforms": {"val": [{"type": "CenterShift"},
                                         {"type": "GridSample", "grid_size": 0.02, "return_inverse": True}]}}
        ds = SceneDataset(rooms, None, config, "val")
        t = best_of(lambda: ds.get(0, np.random.default_rng(0)), repeats)
        emit(f"dataset-get/{points // 1000}k-points-x8-views/cached", "ms", t, "ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--views", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    bench_lookup(args.points, args.views, repeats)
    bench_dataset(repeats, 20_000)


if __name__ == "__main__":
    main()
