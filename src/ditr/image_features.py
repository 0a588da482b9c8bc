"""Where image features come from: one source for the data pipeline, the DITR model, the D-DITR
teacher and ``ditr predict``.

An :class:`ImageFeatureSource` is built from a run's ``vfm`` settings (model, checkpoint, cache,
precision, pos_interpolation, online, download), the network input resolution and two explicit
devices: where the VFM runs and where images are prepared for it. It knows

* each view's patch grid (:meth:`~ImageFeatureSource.patch_grid`: the (h, w) of its features);
* the (M, D) patch-feature table of a sample's views (:meth:`~ImageFeatureSource.table`), from
  the on-disk cache of ``ditr features`` (a missing entry is an error that prints the command
  which fills it, never a silent recomputation in a data-loader worker), or, with ``vfm.online``,
  by running the VFM now, a few views at a time;
* for the online VFM inside the model, the views' normalised network inputs
  (:meth:`~ImageFeatureSource.pixels`, colour-jittered in training) and the table computed from
  them (:meth:`~ImageFeatureSource.table_from_pixels`), which the model and the teacher run on
  every batch (:func:`batch_image_table`).

Cached features are looked up with the same :class:`~ditr.cache.FeatureKey` that filled them, so
the model name, weights, input size, flip, precision and colour-jitter variant must all match.
Training colour jitter comes as a :class:`~ditr.vfm.color_jitter.ColorJitter` and one drawn
variant index per view (0: the image as it is): cached tables read that variant's entry, online
inputs are that variant's jittered image, so both see the same pixels. The points' side of the
lookup (which cell each point reads) is :mod:`ditr.lifting`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .cache import FeatureCache
from .errors import DitrError
from .lifting import ViewFusion, image_table_from_grids, lift, view_weights
from .scene import Scene, View

if TYPE_CHECKING:
    from .projection import Correspondences, ProjectionConfig
    from .vfm.backends import VFMBackend
    from .vfm.color_jitter import ColorJitter

#: Views whose VFM features are computed in one forward when a table is computed now (bounds memory).
VIEW_BATCH = 4


class ImageFeatureSource:
    """Patch-feature tables of views, from the feature cache or the VFM run online.

    ``device`` is where the VFM runs (and, for ``precision: auto``, what the cache keys resolve
    the precision against: features filled on a GPU with ``--precision auto`` are bf16, so say
    ``precision: bf16`` to read them on the CPU); ``preprocess_device`` is where images are
    resized and normalised (the data workers' CPU). ``backend`` reuses an existing VFM backend
    instead of building one from the settings.
    """

    def __init__(self, settings: Mapping[str, Any], resolution: Sequence[int] | None = None, *,
                 device: str | torch.device = "cpu", preprocess_device: str | torch.device = "cpu",
                 backend: VFMBackend | None = None):
        from .device import resolve_device
        from .vfm.backends import build_backend
        from .vfm.extract import FeatureSource

        self.settings = dict(settings)
        self.online = bool(self.settings.get("online", False))
        cache_dir = self.settings.get("cache")
        if not self.online and not cache_dir:
            raise DitrError("vfm.cache is not set: give the feature cache directory of `ditr features`, "
                            "or set vfm.online: true to run the VFM in the model")
        # Online features never touch the cache (its path may be another machine's, as in a checkpoint).
        self.cache = FeatureCache(cache_dir) if cache_dir and not self.online else None
        self.backend = backend if backend is not None else build_backend(
            self.settings, device, hash_memo=self.cache.hash_memo if self.cache else None)
        self.preprocess_device = resolve_device(str(preprocess_device))
        self.resolution: tuple[int, int] | None = tuple(resolution) if resolution else None  # type: ignore[assignment]
        self.extractor = FeatureSource(self.backend, self.cache, self.resolution)

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def feature_dim(self) -> int:
        return self.backend.feature_dim

    @property
    def patch_size(self) -> int:
        return self.backend.patch_size

    @property
    def device(self) -> torch.device:
        """Where the VFM runs."""
        return self.backend.device

    def input_size(self, view: View) -> tuple[int, int]:
        """The network input (H', W') of a view: the resolution, else its size rounded to the patch."""
        return self.backend.input_size(view.height, view.width, self.resolution)

    def patch_grid(self, view: View | None = None) -> tuple[int, int]:
        """(h, w) of a view's patch grid; without a view, that of the configured resolution."""
        if view is None:
            if self.resolution is None:
                raise DitrError("the patch grid of a padding view needs images.resolution")
            h, w = self.backend.input_size(1, 1, self.resolution)
        else:
            h, w = self.input_size(view)
        p = self.patch_size
        return h // p, w // p

    # ------------------------------------------------------------------------------------------ tables
    def table(self, scene: Scene, views: Sequence[View | None], flips: Sequence[bool] | np.ndarray,
              patch_grids: np.ndarray, on_batch: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """(M, D) table of the views (see :mod:`ditr.lifting`), on the CPU.

        Cached: float16 entries of the cache (padding views, None, are zeros). Online: float32,
        the VFM run now on :data:`VIEW_BATCH` views at a time; ``on_batch(done, total)`` reports.
        """
        if not self.online:
            return self.cached_table(scene, views, flips, patch_grids)
        parts = [torch.zeros((0, self.feature_dim))]
        for start in range(0, len(views), VIEW_BATCH):
            stop = start + VIEW_BATCH
            pixels = self.pixels(views[start:stop], flips[start:stop], patch_grids[start:stop])
            parts.append(self.table_from_pixels(pixels).cpu())
            if on_batch is not None:
                on_batch(min(stop, len(views)), len(views))
        return torch.cat(parts)

    def cached_table(self, scene: Scene, views: Sequence[View | None], flips: Sequence[bool] | np.ndarray,
                     patch_grids: np.ndarray, jitter: ColorJitter | None = None,
                     variants: Sequence[int] | None = None) -> torch.Tensor:
        """(M, D) float16 cached features of the views (of variant ``variants[i]`` of ``jitter``
        where given and non-zero); padding views (None) are zeros."""
        if self.cache is None:
            raise DitrError("cached image features need vfm.cache (and vfm.online false)")
        variants = _variants(views, jitter, variants)
        parts = []
        for view, flip, (h, w), index in zip(views, flips, patch_grids, variants):
            if view is None:
                parts.append(torch.zeros((self.feature_dim, int(h), int(w)), dtype=torch.float16))
                continue
            variant = jitter.variant(index) if jitter is not None else None
            grid, state = self.cache.read(self.extractor.key(view, bool(flip), variant))
            if grid is None:
                raise DitrError(self._missing(scene, view, bool(flip), jitter, index, damaged=state == "corrupt"))
            parts.append(grid)
        return image_table_from_grids(parts) if parts else torch.zeros((0, self.feature_dim), dtype=torch.float16)

    def pixels(self, views: Sequence[View | None], flips: Sequence[bool] | np.ndarray, patch_grids: np.ndarray,
               jitter: ColorJitter | None = None, variants: Sequence[int] | None = None) -> torch.Tensor:
        """(V, 3, H', W') normalised network inputs on the CPU, prepared on the preprocess device:
        colour-jittered (training: variant ``variants[i]`` of ``jitter``, the very image whose
        features the cache holds under that variant), resized and mirrored where flipped. Padding
        views (None) are zero images."""
        from .cache import image_digest

        backend, device = self.backend, self.preprocess_device
        p = self.patch_size
        images = []
        for view, flip, (h, w), index in zip(views, flips, patch_grids, _variants(views, jitter, variants)):
            if view is None:
                images.append(torch.zeros((1, 3, int(h) * p, int(w) * p), device=device))
                continue
            rgb = view.read_image()
            variant = jitter.variant(index) if jitter is not None else None
            if variant is not None:
                rgb = variant.apply(rgb, image_digest(view))
            images.append(backend.preprocess([rgb], (int(h) * p, int(w) * p), bool(flip), device=device))
        return torch.cat(images).cpu()

    def table_from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(V h w, D) float32 table of (V, 3, H', W') network inputs, computed now on :attr:`device`."""
        with torch.no_grad():
            grids = self.backend.forward(pixels.to(self.backend.device))
        return image_table_from_grids(grids.float())

    def grids(self, views: Sequence[View], flips: Sequence[bool] | None = None) -> list[torch.Tensor]:
        """(D, h, w) float32 grid per view: cached, else computed (and cached when there is a cache)."""
        return self.extractor.grids(views, flips)

    def _missing(self, scene: Scene, view: View, flip: bool, jitter: ColorJitter | None = None, variant: int = 0,
                 damaged: bool = False) -> str:
        """The error of a missing or damaged entry, with the command that fills the run's whole need
        (``--flip`` and the jitter variants included, so that one fill is enough)."""
        s = self.settings
        variants = jitter.variants if jitter is not None else 0
        res = self.input_size(view)
        cmd = (f"ditr features {scene.path} --model {s['model']} --cache {s['cache']} --resolution {res[0]}x{res[1]}"
               + (f" --checkpoint {s['checkpoint']}" if s.get("checkpoint") else "")
               + (" --flip" if flip else "")
               + (f" --jitter-variants {variants} --color-jitter {','.join(f'{x:g}' for x in jitter.strength)}"
                  if jitter is not None and variants else "")
               + (f" --precision {s['precision']}" if s.get("precision", "auto") != "auto" else ""))
        what = f"features of view {view.name!r}" + (" (flipped)" if flip else "") + (
            f" in colour-jitter variant {variant} of {variants} (strength {list(jitter.strength)})"
            if jitter is not None and variant else "")
        where = f"scene {scene.name}: {what} for {s['model']} at {res[0]}x{res[1]} (settings {self.backend.settings})"
        if damaged:
            return (f"{where}: the entry in the cache {s['cache']} is damaged (its checksum does not match: "
                    f"never served). Recompute it:\n  {cmd}")
        return (f"{where} are not in the cache {s['cache']}. Fill it first:\n  {cmd}\n(the image-flip "
                "augmentation needs --flip, images.jitter_variants K needs --jitter-variants K; vfm.precision must "
                "match the run that filled the cache)")


def _variants(views: Sequence[View | None], jitter: ColorJitter | None, variants: Sequence[int] | None
              ) -> Sequence[int]:
    """The drawn variant per view (all 0 when none were drawn), checked against the views and the jitter."""
    if variants is None:
        return [0] * len(views)
    if len(variants) != len(views):
        raise DitrError(f"{len(variants)} colour-jitter variants for {len(views)} views")
    if jitter is None and any(variants):
        raise DitrError("colour-jitter variants were drawn, but no colour jitter says what they are")
    return variants


def batch_image_table(batch: Mapping[str, Any], source: ImageFeatureSource | None, owner: str = "model"
                      ) -> torch.Tensor:
    """A batch's (M, D) table: its cached ``img_table``, or ``source`` run now on its ``images``.

    ``owner`` names who needs the features in the errors (the DITR model, the D-DITR teacher).
    """
    table = batch.get("img_table")
    if table is not None:
        return table
    views = batch.get("num_views")
    if batch.get("images") is None and source is not None and views is not None and int(views.sum()) == 0:
        return torch.zeros((0, source.feature_dim))  # online, and no sample of the batch has a view
    if batch.get("images") is None:
        raise DitrError(f"the {owner}'s batch needs img_table (cached features) or images (online VFM); "
                        "was it built for a model kind that uses images (ditr, d-ditr)?")
    if source is None:
        raise DitrError(f"batches carry images for an online VFM, but the {owner} has none attached (vfm.online)")
    return source.table_from_pixels(batch["images"])


# ------------------------------------------------------------------------------------------ whole scenes
@dataclass
class LiftedFeatures:
    features: torch.Tensor  # (N, D) float32, zero rows for unseen points
    seen: torch.Tensor  # (N,) bool
    correspondences: Correspondences


def point_features(scene: Scene, source: Any, fusion: ViewFusion = "last",
                   projection: ProjectionConfig | None = None, flips: Sequence[bool] | None = None,
                   generator: torch.Generator | None = None) -> LiftedFeatures:
    """Project the scene into all its views, fetch (or compute) every view's grid with
    ``source.grids`` and lift them onto the points (the renders of ``ditr features``)."""
    from .projection import ProjectionConfig, project_scene

    corr = project_scene(scene, projection or ProjectionConfig())
    weights = view_weights(corr.visible, corr.depth, fusion, generator)
    grids = source.grids(scene.views, flips)
    features, seen = lift(grids, corr.uv, corr.image_sizes, weights, flips)
    return LiftedFeatures(features, seen, corr)
