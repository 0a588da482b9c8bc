"""Filling the cache, sharded over (simulated) torchrun ranks."""

from __future__ import annotations

import numpy as np

from ditr.cache import FeatureCache
from ditr.scene import View
from ditr.vfm import VFMBackend, load_vfm
from ditr.vfm.extract import FeatureSource, ImageJob, distributed_rank_world, fill_cache, shard


def _jobs(n_views: int = 5) -> list[ImageJob]:
    rng = np.random.default_rng(0)
    k = np.array([[40.0, 0, 24], [0, 40.0, 16], [0, 0, 1]])
    views = [View(name=f"v{i}", width=48, height=32, intrinsics=k, cam_to_world=np.eye(4),
                  image=rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)) for i in range(n_views)]
    return [ImageJob("scene", v, flip) for v in views for flip in (False, True)]


def _source(cache_dir) -> FeatureSource:
    return FeatureSource(VFMBackend(load_vfm("dinov3-tiny-random")), FeatureCache(cache_dir), batch_size=3)


def test_shards_are_disjoint_and_cover_everything():
    jobs = list(range(11))
    parts = [shard(jobs, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == jobs and max(map(len, parts)) - min(map(len, parts)) <= 1


def test_two_ranks_fill_the_cache_exactly_once(tmp_path, monkeypatch):
    jobs = _jobs()
    stats = []
    for rank in (0, 1):  # what torchrun --nproc-per-node 2 runs, one after the other
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        r, w = distributed_rank_world()
        stats.append(fill_cache(jobs, _source(tmp_path), r, w))
    assert [s.misses for s in stats] == [5, 5] and sum(s.hits for s in stats) == 0
    assert len(FeatureCache(tmp_path).entries()) == len(jobs)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert distributed_rank_world() == (0, 1)
    source = _source(tmp_path)
    merged = fill_cache(jobs, source)
    assert (merged.images, merged.hits, merged.misses, source.forward_calls) == (10, 10, 0, 0)
    assert merged.as_dict()["images"] == 10
