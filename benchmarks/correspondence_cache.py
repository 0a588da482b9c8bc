"""What the per-view correspondence cache saves: projecting a sample every epoch vs reading it.

Cases per scene, each the best of ``--repeats`` runs after a warm-up, wall seconds on one thread:

* ``reference:project`` — :func:`ditr.projection.project_scene` with the outdoor presets' settings
  (the LiDAR scan test), what the data workers did for every sample of every epoch before;
* ``cold`` — :func:`ditr.correspondence_cache.project_cached` into an empty cache (the first epoch:
  projection, hashing the inputs, writing one entry per view);
* ``warm`` — the same from a filled cache (every later epoch);
* ``geometry-only`` — ``occlusion: none`` (the reference's outdoor rule), for scale.

Scenes: synthetic streets (32-beam LiDAR, six 480x270 cameras, as the occlusion study) and, where
the shared nuScenes sample is found (``--nuscenes DIR``, an imported key frame), that key frame.
``ratio`` is the case's time over ``reference:project`` in the same run.

    python benchmarks/correspondence_cache.py [--streets 100 101] [--nuscenes DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ditr.correspondence_cache import CorrespondenceCache, project_cached
from ditr.io.synthetic.lidar import LidarConfig
from ditr.io.synthetic.outdoor import generate_street
from ditr.projection import ProjectionConfig, project_scene
from ditr.scene import Scene

OUTDOOR = ProjectionConfig(acquisition="lidar")  # configs/base/outdoor.yaml's projection section


def best(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, scene: Scene, repeats: int) -> None:
    warm_cache = CorrespondenceCache(tempfile.mkdtemp())
    cases = {
        "reference:project": lambda: project_scene(scene, OUTDOOR),
        "cold": lambda: project_cached(scene, OUTDOOR, CorrespondenceCache(tempfile.mkdtemp())),
        "warm": lambda: project_cached(scene, OUTDOOR, warm_cache),
        "geometry-only": lambda: project_scene(scene, ProjectionConfig(occlusion="none")),
    }
    seconds = {case: best(run, repeats) for case, run in cases.items()}
    for case, value in seconds.items():
        print(json.dumps({"bench": "correspondence_cache", "scene": name, "points": scene.num_points,
                          "views": len(scene.views), "case": case, "value": round(value, 4), "unit": "s",
                          "ratio": round(value / seconds["reference:project"], 3)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streets", type=int, nargs="*", default=[100, 101], help="synthetic street seeds")
    ap.add_argument("--nuscenes", type=Path, help="an imported nuScenes key frame (scene folder)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for seed in args.streets:
        street = generate_street(seed, lidar=LidarConfig.velodyne(32), width=480, height=270)
        measure(f"street-{seed}", street.scene, args.repeats)
    if args.nuscenes is not None:
        measure("nuscenes", Scene.load(args.nuscenes), args.repeats)


if __name__ == "__main__":
    main()
