"""What the per-view correspondence cache saves: projecting a sample every epoch vs reading it.

Cases per scene, each the best of ``--repeats`` runs after a warm-up, wall seconds on one thread:

* ``reference:project`` — :func:`ditr.projection.project_scene` with the presets' settings (the
  outdoor ones' LiDAR scan test; ScanNet's depth-map test and 1-4 m gate), what the data workers did
  for every sample of every epoch before;
* ``cold`` — :func:`ditr.correspondence_cache.project_cached` into an empty cache (the first epoch:
  projection, hashing the inputs, writing one entry per view);
* ``warm`` — the same from a filled cache (every later epoch);
* ``geometry-only`` — ``occlusion: none`` (the reference's outdoor rule), for scale.

Scenes: synthetic streets (32-beam LiDAR, six 480x270 cameras, as the occlusion study) and, where
given, an imported nuScenes key frame (``--nuscenes DIR``) and an imported ScanNet scene with its
depth maps (``--scannet DIR``). The scene is read from disk in every run (as a data worker does).
``ratio`` is the case's time over ``reference:project`` in the same run.

    python benchmarks/correspondence_cache.py [--streets 100 101] [--nuscenes DIR] [--scannet DIR] [--repeats 3]
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
SCANNET = ProjectionConfig(min_depth=1.0, max_depth=4.0)  # configs/scannet.yaml's


def best(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, folder: Path, config: ProjectionConfig, repeats: int) -> None:
    def load() -> Scene:
        return Scene.load(folder, check_images=False)

    warm_cache = CorrespondenceCache(tempfile.mkdtemp())
    cases = {
        "reference:project": lambda: project_scene(load(), config),
        "cold": lambda: project_cached(load(), config, CorrespondenceCache(tempfile.mkdtemp())),
        "warm": lambda: project_cached(load(), config, warm_cache),
        "geometry-only": lambda: project_scene(load(), ProjectionConfig(occlusion="none")),
    }
    scene = load()
    seconds = {case: best(run, repeats) for case, run in cases.items()}
    for case, value in seconds.items():
        print(json.dumps({"bench": "correspondence_cache", "scene": name, "points": scene.num_points,
                          "views": len(scene.views), "case": case, "value": round(value, 4), "unit": "s",
                          "ratio": round(value / seconds["reference:project"], 3)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streets", type=int, nargs="*", default=[100, 101], help="synthetic street seeds")
    ap.add_argument("--nuscenes", type=Path, help="an imported nuScenes key frame (scene folder)")
    ap.add_argument("--scannet", type=Path, help="an imported ScanNet scene with depth maps (scene folder)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for seed in args.streets:
        folder = Path(tempfile.mkdtemp()) / f"street-{seed}"
        generate_street(seed, lidar=LidarConfig.velodyne(32), width=480, height=270).save(folder)
        measure(folder.name, folder, OUTDOOR, args.repeats)
    for name, folder, config in (("nuscenes", args.nuscenes, OUTDOOR), ("scannet", args.scannet, SCANNET)):
        if folder is not None:
            measure(name, folder, config, args.repeats)


if __name__ == "__main__":
    main()
