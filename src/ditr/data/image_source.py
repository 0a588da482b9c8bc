"""Where a sample's image features come from: the on-disk cache of ``ditr features``, or the views'
network inputs when the VFM runs online (in the model, every step).

Cached features are looked up with the same :class:`~ditr.cache.FeatureKey` that filled them, so
the model name, weights, input size, flip and precision must all match; a missing entry is an
error that prints the ``ditr features`` command which fills it, never a silent recomputation in a
data-loader worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..cache import FeatureCache
from ..configs import VFMConfig
from ..errors import DitrError
from ..scene import Scene, View
from .color_jitter import color_jitter


class FeatureGrids:
    """Per-view patch grids from the feature cache (or network inputs for the online VFM).

    Built from the config's ``vfm`` section; the cache key needs the model's weights identity and
    the settings the features were computed with (``vfm.precision`` must match: features filled on
    a GPU with ``--precision auto`` are bf16, so say ``precision: bf16`` to read them on the CPU).
    """

    def __init__(self, vfm: VFMConfig, resolution: Sequence[int] | None):
        from ..vfm.backends import VFMBackend
        from ..vfm.extract import FeatureSource
        from ..vfm.loading import load_vfm

        self.settings = vfm
        self.online = vfm.online
        cache_dir = vfm.cache
        if not self.online and not cache_dir:
            raise DitrError("vfm.cache is not set: give the feature cache directory of `ditr features`, "
                            "or set vfm.online: true to run the VFM in the model")
        self.cache = FeatureCache(cache_dir) if cache_dir else None
        handle = load_vfm(vfm.model, vfm.checkpoint, hash_memo=self.cache.hash_memo if self.cache else None)
        # Data workers only resize and normalise here (the network runs on vfm.device, in the model).
        backend = VFMBackend(handle, device=vfm.preprocess_device, precision=vfm.precision,
                             pos_interpolation=vfm.pos_interpolation)
        self.resolution = tuple(resolution) if resolution else None
        self.source = FeatureSource(backend, self.cache, self.resolution)  # type: ignore[arg-type]

    @property
    def feature_dim(self) -> int:
        return self.source.backend.feature_dim

    def grid_size(self, view: View) -> tuple[int, int]:
        h, w = self.source.backend.input_size(view.height, view.width, self.resolution)
        p = self.source.backend.patch_size
        return h // p, w // p

    def table(self, scene: Scene, views: Sequence[View | None], flips: np.ndarray,
              grid_sizes: np.ndarray) -> torch.Tensor:
        """(sum h w, D) float16 cached features of the views; padding views (None) are zeros."""
        parts = []
        for view, flip, (h, w) in zip(views, flips, grid_sizes):
            if view is None:
                parts.append(torch.zeros((int(h * w), self.feature_dim), dtype=torch.float16))
                continue
            grid = self.cache.get(self.source.key(view, bool(flip)))  # type: ignore[union-attr]
            if grid is None:
                raise DitrError(self._missing(scene, view, bool(flip)))
            parts.append(grid.flatten(1).T)
        return torch.cat(parts) if parts else torch.zeros((0, self.feature_dim), dtype=torch.float16)

    def pixels(self, views: Sequence[View | None], flips: np.ndarray, grid_sizes: np.ndarray,
               jitter: Sequence[float] | None, rng: np.random.Generator) -> torch.Tensor:
        """(V, 3, H', W') normalised network inputs for the online VFM: colour-jittered (training,
        ``jitter`` given), resized and mirrored where flipped."""
        backend = self.source.backend
        p = backend.patch_size
        images = []
        for view, flip, (h, w) in zip(views, flips, grid_sizes):
            if view is None:
                images.append(torch.zeros((1, 3, int(h) * p, int(w) * p), device=backend.device))
                continue
            rgb = view.read_image()
            if jitter is not None:
                rgb = color_jitter(rgb, jitter, rng)
            images.append(backend.preprocess([rgb], (int(h) * p, int(w) * p), bool(flip)))
        return torch.cat(images).cpu()

    def _missing(self, scene: Scene, view: View, flip: bool) -> str:
        s = self.settings
        res = self.source.backend.input_size(view.height, view.width, self.resolution)
        cmd = (f"ditr features {scene.path} --model {s.model} --cache {s.cache} --resolution {res[0]}x{res[1]}"
               + (f" --checkpoint {s.checkpoint}" if s.checkpoint else "")
               + (" --flip" if flip else "")
               + (f" --precision {s.precision}" if s.precision != "auto" else ""))
        return (f"scene {scene.name}: features of view {view.name!r}{' (flipped)' if flip else ''} for "
                f"{s.model} at {res[0]}x{res[1]} (settings {self.source.backend.settings}) are not in the "
                f"cache {s.cache}. Fill it first:\n  {cmd}\n(the image-flip augmentation needs --flip; "
                "vfm.precision must match the run that filled the cache)")
