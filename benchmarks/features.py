"""2D feature extraction speed (docs/design.md#benchmarks): images/s of DINOv2 ViT-S/14 and ViT-B/14 at 420x560,
and the per-scene time of a cached lookup against recomputing the features.

The models have the real architectures with random weights (speed does not depend on the values;
nothing is downloaded). ``reference:transformers-forward`` times the bare transformers model on
already-normalised pixels in the same run, so the overhead of our preprocessing stays visible.
Timings are the best of several alternating runs (one with ``--quick``): other processes share the CPU.

    python benchmarks/features.py [--quick] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ditr.cache import FeatureCache
from ditr.scene import View
from ditr.vfm import VFMBackend, get_spec
from ditr.vfm.extract import FeatureSource
from ditr.vfm.loading import VFMHandle, build_random

RESOLUTION = (420, 560)  # ScanNet setting of the reference
IMAGE = (480, 640)  # ScanNet colour frames as exported


def emit(case: str, metric: str, value: float, unit: str, **extra) -> None:
    print(json.dumps({"bench": "features", "case": case, "metric": metric, "value": round(value, 4),
                      "unit": unit, **extra}), flush=True)


def random_model(name: str) -> VFMHandle:
    return VFMHandle.of_model(get_spec(name), build_random(get_spec(name)), "random weights (benchmark)", True)


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*IMAGE, 3), dtype=np.uint8) for _ in range(n)]


def best_times(fns: dict[str, object], repeats: int) -> dict[str, float]:
    """Best of ``repeats`` per function after a warm-up, alternating between the functions so that
    each sees the same background load (other processes share this machine's CPU)."""
    for fn in fns.values():
        fn()  # warm-up: allocator, kernels, position-embedding resize
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_throughput(name: str, device: str, batch: int, repeats: int, reference: bool) -> None:
    backend = VFMBackend(random_model(name), device=device)
    batch_images = images(batch)
    pixels = backend.preprocess(batch_images, RESOLUTION)

    def bare() -> None:
        with torch.inference_mode():
            backend.model(pixel_values=pixels)

    fns = {"ours": lambda: backend(batch_images, RESOLUTION)}
    if reference:
        fns["reference"] = bare
    best = best_times(fns, repeats)
    case = f"{name}/{RESOLUTION[0]}x{RESOLUTION[1]}/batch{batch}/{backend.device.type}"
    emit(case, "images_per_s", batch / best["ours"], "img/s", precision=backend.precision)
    if reference:
        emit(f"reference:transformers-forward/{case}", "images_per_s", batch / best["reference"], "img/s")


def bench_cache(name: str, device: str, views: int) -> None:
    """One scene of ``views`` frames: recompute all grids vs read them back from the cache."""
    k = np.array([[500.0, 0, IMAGE[1] / 2], [0, 500.0, IMAGE[0] / 2], [0, 0, 1]])
    scene_views = [View(name=f"frame{i}", width=IMAGE[1], height=IMAGE[0], intrinsics=k, cam_to_world=np.eye(4),
                        image=img) for i, img in enumerate(images(views, seed=1))]
    backend = VFMBackend(random_model(name), device=device)
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(Path(tmp))
        backend([scene_views[0].image], RESOLUTION)  # warm-up outside the timing
        start = time.perf_counter()
        FeatureSource(backend, cache, RESOLUTION, batch_size=views).grids(scene_views)
        recompute = time.perf_counter() - start
        source = FeatureSource(backend, cache, RESOLUTION)
        start = time.perf_counter()
        source.grids(scene_views)
        cached = time.perf_counter() - start
        assert source.forward_calls == 0
        entry_mb = sum(p.stat().st_size for p in cache.entries()) / views / 2**20
    case = f"{name}/{views}-views/{RESOLUTION[0]}x{RESOLUTION[1]}/{backend.device.type}"
    emit(f"{case}/recompute", "scene_s", recompute, "s")
    emit(f"{case}/cached", "scene_s", cached, "s", entry_mb=round(entry_mb, 3))
    emit(f"{case}/cached-speedup", "ratio", recompute / cached, "x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute on 2 CPU cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 3
    bench_throughput("dinov2-vits14-reg", args.device, batch=2, repeats=repeats, reference=not args.quick)
    bench_throughput("dinov2-vitb14-reg", args.device, batch=2, repeats=repeats, reference=False)
    bench_cache("dinov2-vits14-reg", args.device, views=10)


if __name__ == "__main__":
    main()
