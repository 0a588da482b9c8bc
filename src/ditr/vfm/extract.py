"""Per-view feature grids through the on-disk cache, and filling that cache for many scenes.

:class:`FeatureSource` is what everything downstream asks for features (lifting, training): it keys
each request (:class:`~ditr.cache.FeatureKey`), serves hits from the cache and computes only the
misses, batched; a request may name a colour-jitter variant of the image
(:class:`~ditr.vfm.color_jitter.JitterVariant`), whose features are keyed and computed as those of
the jittered image. :func:`fill_cache` runs it over a list of images, sharded over torchrun ranks:
rank r takes every world-th image, and since entries are independent files, the ranks' outputs
merge into one cache without any communication.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..cache import FeatureCache, FeatureKey, image_digest
from ..scene import Scene, View
from .backends import VFMBackend, build_backend
from .color_jitter import REFERENCE_STRENGTH, ColorJitter, JitterVariant


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them in the environment; (0, 1) when not launched so."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@dataclass(frozen=True)
class ImageJob:
    """One view's features to have in the cache (``flip``: those of the mirrored image; ``jitter``:
    those of a colour-jittered variant)."""

    scene: str
    view: View
    flip: bool = False
    jitter: JitterVariant | None = None


@dataclass
class FillStats:
    """What one rank did: images in its share, how many were already cached, and the wall time."""

    images: int = 0
    hits: int = 0
    misses: int = 0
    seconds: float = 0.0
    damaged: int = 0  # entries that failed their checksum (or were unreadable): recomputed, counted in misses
    migrated: int = 0  # entries written before checksums that got theirs now

    def as_dict(self) -> dict[str, float | int]:
        return {"images": self.images, "hits": self.hits, "misses": self.misses, "damaged": self.damaged,
                "migrated": self.migrated, "seconds": round(self.seconds, 3)}


class FeatureSource:
    """Feature grids for views, from the cache when possible (``cache=None`` always computes)."""

    def __init__(self, backend: VFMBackend, cache: FeatureCache | None = None,
                 resolution: tuple[int, int] | None = None, batch_size: int = 8):
        self.backend = backend
        self.cache = cache
        self.resolution = resolution
        self.batch_size = max(1, batch_size)
        self.forward_calls = 0  # model forwards run so far (lets tests and benchmarks prove cache hits)

    def key(self, view: View, flip: bool = False, jitter: JitterVariant | None = None) -> FeatureKey:
        size = self.backend.input_size(view.height, view.width, self.resolution)
        return FeatureKey(image=image_digest(view), model=self.backend.spec.name,
                          weights=self.backend.handle.identity, size=size, flip=flip,
                          settings=self.backend.settings, jitter=jitter.tag if jitter else "")

    def grids(self, views: Sequence[View], flips: Sequence[bool] | None = None,
              jitters: Sequence[JitterVariant | None] | None = None,
              on_done: Callable[[int, bool], None] | None = None) -> list[torch.Tensor]:
        """(D, H'/p, W'/p) float32 grid per view (of its jittered variant where ``jitters`` names
        one); ``on_done(count, was_hit)`` reports progress."""
        flips = list(flips) if flips is not None else [False] * len(views)
        jitters = list(jitters) if jitters is not None else [None] * len(views)
        keys = [self.key(v, f, j) for v, f, j in zip(views, flips, jitters)]
        out: list[torch.Tensor | None] = [None] * len(views)
        todo: dict[tuple[tuple[int, int], bool], list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            # the computing reader: damaged entries are recomputed below, old ones get their checksum
            cached = self.cache.get(key, migrate=True) if self.cache is not None else None
            if cached is not None:
                out[i] = cached.float()
                if on_done:
                    on_done(1, True)
            else:
                todo[(key.size, key.flip)].append(i)
        for (size, flip), idx in todo.items():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                images = [views[i].read_image() for i in chunk]
                images = [jitters[i].apply(img, keys[i].image) if jitters[i] else img  # type: ignore[union-attr]
                          for i, img in zip(chunk, images)]
                pixels = self.backend.preprocess(images, size, flip)
                feats = self.backend.forward(pixels).cpu()
                self.forward_calls += 1
                for i, f in zip(chunk, feats):
                    if self.cache is not None:
                        self.cache.put(keys[i], f)
                    out[i] = f.half().float()  # what a later cache hit returns, so runs agree exactly
                if on_done:
                    on_done(len(chunk), False)
        return out  # type: ignore[return-value]


def image_jobs(scene: str, views: Sequence[View], flips: Sequence[bool] = (False,),
               jitter: ColorJitter | None = None) -> list[ImageJob]:
    """Every entry a scene's views need: each view as it is and, with ``jitter``, its variants
    1..``jitter.variants``, each for every flip in ``flips``."""
    variants = [None] + [jitter.variant(k) for k in range(1, jitter.variants + 1)] if jitter else [None]
    return [ImageJob(scene, view, flip, variant) for view in views for flip in flips for variant in variants]


def shard(jobs: Sequence[ImageJob], rank: int, world: int) -> list[ImageJob]:
    """This rank's share: every ``world``-th job starting at ``rank`` (balanced to within one)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    return list(jobs[rank::world])


def fill_cache(jobs: Sequence[ImageJob], source: FeatureSource, rank: int = 0, world: int = 1,
               on_progress: Callable[[int], None] | None = None) -> FillStats:
    """Make sure this rank's share of ``jobs`` is cached; returns hit / miss counts and wall time."""
    start = time.perf_counter()
    mine = shard(jobs, rank, world)
    stats = FillStats(images=len(mine))
    before = dict(source.cache.stats) if source.cache is not None else {}

    def done(count: int, hit: bool) -> None:
        if hit:
            stats.hits += count
        else:
            stats.misses += count
        if on_progress:
            on_progress(count)

    step = source.batch_size * 4  # bounded memory: grids are dropped once they are on disk
    for flip in (False, True):  # grouped so each forward batch shares one flip setting
        subset = [j for j in mine if j.flip == flip]
        for i in range(0, len(subset), step):
            part = subset[i:i + step]
            source.grids([j.view for j in part], [flip] * len(part), [j.jitter for j in part], on_done=done)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if source.cache is not None:
        stats.damaged = source.cache.stats["corrupt"] - before["corrupt"]
        stats.migrated = source.cache.stats["migrated"] - before["migrated"]
    stats.seconds = time.perf_counter() - start
    return stats


def fill_scene_features(scenes: Sequence[str | Path], model: str, cache_dir: str | Path, *,
                        checkpoint: str | None = None, flips: Sequence[bool] = (False, True), device: str = "auto",
                        jitter_variants: int = 0, color_jitter: Sequence[float] = REFERENCE_STRENGTH,
                        on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Cache the features of every view of the scene directories (and of their mirror images, for
    the flip augmentation, and of ``jitter_variants`` colour-jittered variants at strength
    ``color_jitter``) with the VFM ``model``; what was used and done, for reports.

    The library form of ``ditr features SCENES --model M --cache DIR --flip [--jitter-variants K]``
    at the images' own size rounded to the patch (no ``--resolution``), on one process.
    """
    cache = FeatureCache(cache_dir)
    backend = build_backend({"model": model, "checkpoint": checkpoint}, device, hash_memo=cache.hash_memo)
    jitter = ColorJitter(tuple(color_jitter), variants=jitter_variants) if jitter_variants else None
    jobs = [job for scene in scenes
            for job in image_jobs(Path(scene).name, Scene.load(scene, check_images=False).views, flips, jitter)]
    stats = fill_cache(jobs, FeatureSource(backend, cache), on_progress=on_progress)
    handle = backend.handle
    return {"model": model, "weights": handle.source, "random_weights": handle.random_weights,
            "feature_dim": backend.feature_dim, "precision": backend.precision, "device": str(backend.device),
            "images": stats.images, "computed": stats.misses, "damaged": stats.damaged, "migrated": stats.migrated}
