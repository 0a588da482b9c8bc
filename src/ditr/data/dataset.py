"""A dataset over scene directories: points, the views that saw them, their cached 2D features.

One item = one scene. Loading goes: read the scene -> select the frames of this sample (training:
``views_per_sample`` random frames in random order; evaluation: at a fixed stride, evenly spaced,
or all in their stored order) -> project the RAW points into those views
(docs/design.md#projection-and-visibility; each view's result is kept beside cached features,
:mod:`ditr.correspondence_cache`)
-> 3D transforms, which carry the correspondences along -> per-point model input ``feat`` and the
image-feature lookup (:func:`ditr.lifting.build_lookup`, whose view fusion decides which view a
point reads) -> torch tensors.

Features come from an :class:`~ditr.image_features.ImageFeatureSource`: the on-disk cache of
``ditr features`` (never computed silently: a missing entry is an error that says which command
fills it), or, with ``vfm.online``, the sample carries the views' normalised network inputs and the
model runs the VFM itself. The run config's model kind says whether samples carry views at all
(:attr:`RunConfig.uses_images`: not for the 3D-only PTv3, nor for D-DITR fine-tuning). With
``images.color_jitter``, each training view draws a colour-jitter variant after the transforms
(:meth:`ditr.vfm.color_jitter.ColorJitter.draw`): the cache's entry of that variant, or the online
VFM's input jittered as that variant.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..configs import RunConfig
from ..errors import DitrError, SceneError
from ..image_features import ImageFeatureSource
from ..lifting import build_lookup
from ..correspondence_cache import SUBFOLDER, CorrespondenceCache, project_cached
from ..scene import COORD_FILE, META_FILE, Scene, View
from .sample import Sample
from .transforms import CenterShift, Compose, GridSample, build_transforms

MODES = ("train", "val", "test")
#: How a sample selects its frames (``images.train_views`` / ``images.eval_views``).
FRAME_RULES = ("random", "strided", "evenly", "all")


def resolve_scenes(scenes: str | Path | Sequence[str | Path], split: str | Path | Sequence[str] | None = None
                   ) -> list[Path]:
    """Scene directories from a root + split, or an explicit list of directories.

    ``split`` may be a text file with one entry per line, a split name looked up as
    ``ROOT/splits/<name>.txt`` or as the sub-directory ``ROOT/<name>/``, or a list of entries.
    An entry of a split file is a scene directory or a directory of scenes (``Area_1`` of S3DIS);
    an entry of a list may also be any split of its own, so ``[train, val, test]`` is the union of
    three split files. Without a split every scene directory under the root is used.
    """
    if not isinstance(scenes, (str, Path)):
        return [Path(s) for s in scenes]
    root = Path(scenes)
    if not root.is_dir():
        raise DitrError(f"data root {root} is not a directory")
    if split is None:
        found = sorted(p for p in root.iterdir() if (p / COORD_FILE).is_file())
        if not found:
            raise DitrError(f"{root}: no scene directories (sub-directories with {COORD_FILE})")
        return found
    if not isinstance(split, (str, Path)):
        return [p for entry in split for p in _resolve_list_entry(root, str(entry))]
    for candidate in (Path(split), root / "splits" / f"{split}.txt"):
        if candidate.is_file():
            names = [line.strip() for line in candidate.read_text().splitlines() if line.strip()]
            return [p for name in names for p in _resolve_entry(root, name)]
    if (root / str(split)).is_dir():
        return resolve_scenes(root / str(split))
    raise DitrError(f"split {split!r}: neither a file, nor {root}/splits/{split}.txt, nor a directory {root}/{split}")


def config_scenes(config: RunConfig, mode: str) -> list[Path]:
    """The scene directories of ``dataset.root`` and ``dataset.splits[mode]`` (``test`` falls back to ``val``)."""
    data = config.dataset
    if not data.root:
        raise DitrError("dataset.root is not set (the directory of imported scenes)")
    split = data.splits.get(mode, data.splits.get("val")) if mode == "test" else data.splits.get(mode)
    return resolve_scenes(data.root, split)


def _resolve_list_entry(root: Path, name: str) -> list[Path]:
    """A scene directory, else whatever a split of that name is (a file, ROOT/splits/<name>.txt, a directory)."""
    if (root / name / COORD_FILE).is_file():
        return [root / name]
    return resolve_scenes(root, name)


def _resolve_entry(root: Path, name: str) -> list[Path]:
    path = root / name
    if (path / COORD_FILE).is_file():
        return [path]
    if path.is_dir():
        return resolve_scenes(path)
    raise DitrError(f"split entry {name!r}: {path} is neither a scene nor a directory of scenes")


def check_input_files(paths: Sequence[Path], input_features: Sequence[str]) -> None:
    """Refuse, before training starts (:func:`ditr.training.train`), scenes that lack an input array
    (``normal.npy`` above all), rather than at the first sample that reads one.

    Normals are never estimated silently while training: they belong to the data, so they are made
    once, at import (``--normals estimate``), and every run, evaluation and checkpoint sees the same.
    """
    for name in input_features:
        if name == "coord":
            continue
        lacking = [p for p in paths if p.is_dir() and not (p / f"{name}.npy").is_file()]
        if not lacking:
            continue
        rest = ",".join(n for n in input_features if n != name)
        raise DitrError(f"{len(lacking)} of {len(paths)} scenes lack {name}.npy (first: {lacking[0]}), which "
                        f"dataset.input_features reads: {_how_to_get(name)}, or train without it: "
                        f"dataset.input_features=[{rest}]")


def _how_to_get(name: str) -> str:
    if name == "normal":
        return "import the scenes again with --normals estimate (docs/datasets.md#normals)"
    return f"use scenes that have {name}"


def label_array(path: Path, segment: str | None = None) -> str | None:
    """The name of the label array a scene directory's samples use, without loading the scene:
    ``segment`` when given, else the scene's meta.json ``segment``, else ``segment`` or its only
    (first) ``segment*`` array (the rule of :meth:`ditr.scene.Scene.segment`); None if absent."""
    if segment:
        return segment if (path / f"{segment}.npy").is_file() else None
    meta_file = path / META_FILE
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            meta = {}
        chosen = meta.get("segment") if isinstance(meta, dict) else None
        if isinstance(chosen, str) and chosen:
            return chosen if chosen.startswith("segment") and (path / f"{chosen}.npy").is_file() else None
    if (path / "segment.npy").is_file():
        return "segment"
    found = sorted(p.stem for p in path.glob("segment*.npy"))
    return found[0] if found else None


def pick_frames(num_frames: int, count: int | None, rule: str, rng: np.random.Generator) -> np.ndarray:
    """Indices of the frames a sample uses (frame selection; which of them a point reads is the
    view fusion of :mod:`ditr.lifting`).

    ``random``: ``count`` distinct frames in random order (so the reference's "last view wins"
    picks a random one); ``strided``: the reference's evaluation rule, step = ``num_frames // count``
    and frames ``0, step, ..., (count - 1) * step`` (so the tail of the sequence may be left out);
    ``evenly``: ``count`` frames evenly spaced from the first to the last; ``all``: every frame in
    stored order (fixed camera rigs). With at most ``count`` frames, ``strided`` and ``evenly`` take
    all of them in order (``random`` all of them in random order).
    """
    if rule == "all" or count is None:
        return np.arange(num_frames)
    if rule == "random":
        return rng.permutation(num_frames)[:count]
    if rule in ("strided", "evenly") and num_frames <= count:
        return np.arange(num_frames)
    if rule == "strided":
        return np.arange(count, dtype=np.int64) * (num_frames // count)
    if rule == "evenly":
        return np.unique(np.round(np.linspace(0, num_frames - 1, count)).astype(np.int64))
    raise DitrError(f"frame selection {rule!r}: use one of {FRAME_RULES}")


def item_rng() -> np.random.Generator:
    """The generator of one item, drawn from NumPy's global generator (which the training engine
    seeds per item: :class:`~ditr.engine.loading.SeededDataset`)."""
    return np.random.default_rng(np.random.randint(0, 2**31, size=4))


def _variant_position(pipeline: Compose) -> int:
    """Where the test-time variants go in the test pipeline: before the GridSample that splits the
    scene into fragments (the first ``test``-mode one; without one, the first GridSample), so that
    rotation / scaling / flipping act on the whole cloud and the fragments are voxelised after it.

    What comes before runs once for all variants, as in the reference, where the variants act on
    the output of the shared transforms: in particular a pre-grid (a ``train``-mode GridSample with
    ``return_inverse``, the outdoor test pipelines) draws its points once, and every variant's
    fragments vote for the same pre-grid points.
    """
    steps = pipeline.transforms
    grids = [i for i, t in enumerate(steps) if isinstance(t, GridSample)]
    fragmenting = [i for i in grids if steps[i].mode == "test"]
    return (fragmenting or grids or [len(steps)])[0]


class SceneDataset(Dataset):
    """Samples of scenes for ``mode`` train / val / test, configured by a run config (dict).

    Items are dicts of tensors (see docs/data.md). In ``test`` mode with a fragmenting ``GridSample``
    or ``test_time.variants``, an item is ``{"fragments": [sample, ...], "origin_segment", "name"}``:
    every fragment of every variant, each with ``index`` (its points' rows in the scene) for voting;
    after a pre-grid also ``represented_by`` (for every scene point the row whose votes it takes).
    ``__getitem__`` draws its randomness from NumPy's global generator, which the training engine
    seeds per (seed, epoch, position); :meth:`get` takes an explicit generator.

    ``features`` is the image-feature source to use (``ditr predict`` passes the model's, whose
    VFM runs on the model's device); by default one is built from the config's ``vfm`` section.
    """

    def __init__(self, scenes: str | Path | Sequence[str | Path], split: str | Path | Sequence[str] | None,
                 config: RunConfig | Mapping[str, Any], mode: str = "train", transforms: Compose | None = None,
                 features: ImageFeatureSource | None = None):
        if mode not in MODES:
            raise DitrError(f"mode must be one of {MODES}, not {mode!r}")
        config = RunConfig.coerce(config)
        self.mode = mode
        self.paths = resolve_scenes(scenes, split)
        self.segment_key = config.dataset.segment
        self.num_classes = config.dataset.num_classes
        #: Whether samples must have labels: the model segments (not the D-DITR student) and it trains.
        self.segments = config.kind.segments
        self.labels_required = self.segments and mode == "train"
        self.input_features = list(config.dataset.input_features)
        self.loop = config.dataset.loop if mode == "train" else 1
        self.images = config.images
        self.use_images = config.uses_images
        self.view_fusion = self.images.view_strategy
        self.projection = config.projection
        self.transforms = transforms if transforms is not None else build_transforms(
            config.transforms.for_mode(mode), f"transforms.{mode}")
        variants = config.test_time.variants if mode == "test" else None
        #: Transforms that run once per sample, then each of ``pipelines`` on a copy of the result.
        self.shared = Compose([])
        self.pipelines = [self.transforms]
        if variants:
            at = _variant_position(self.transforms)
            self.shared = Compose(self.transforms.transforms[:at])
            self.pipelines = [Compose([*build_transforms(v, f"test_time.variants[{i}]").transforms,
                                       *self.transforms.transforms[at:]]) for i, v in enumerate(variants)]
        self.mix3d_p = config.mix3d.p if mode == "train" else 0.0
        self.features = None
        if self.use_images:
            self.features = features if features is not None else self._feature_source(config)
        #: Each view's projection, kept beside cached features (docs/projection.md#cached-correspondences).
        cache = self.features.cache if self.features is not None else None
        self.correspondences = CorrespondenceCache(cache.root / SUBFOLDER) if cache is not None else None
        #: Training colour jitter: each view draws a variant (docs/features.md#colour-jitter); evaluation never does.
        self.jitter = self.images.jitter() if mode == "train" and self.use_images else None
        if self.jitter is not None and not self.jitter.variants and not self.features.online:  # type: ignore[union-attr]
            raise DitrError("images.color_jitter with images.jitter_variants: 0 jitters every image afresh, so its "
                            "features cannot come from the cache: cache K jittered variants per image (`ditr features "
                            "... --jitter-variants K`) and set images.jitter_variants: K, or set vfm.online: true, or "
                            "images.color_jitter: null to train from cached features without jitter")

    def _feature_source(self, config: RunConfig) -> ImageFeatureSource:
        """The data workers' source: they only read the cache or prepare images, on
        ``vfm.preprocess_device`` (which is also what ``precision: auto`` means in the cache keys)."""
        device = config.vfm.preprocess_device
        return ImageFeatureSource(dataclasses.asdict(config.vfm), self.images.resolution, device=device,
                                  preprocess_device=device)

    @classmethod
    def from_config(cls, config: RunConfig | Mapping[str, Any], mode: str = "train") -> SceneDataset:
        """The dataset of ``dataset.root`` and ``dataset.splits[mode]`` (the split for ``test``
        falls back to ``val``)."""
        config = RunConfig.coerce(config)
        return cls(config_scenes(config, mode), None, config, mode)

    def __len__(self) -> int:
        return len(self.paths) * self.loop

    def check_labels(self) -> dict[str, Any]:
        """Before any work: every scene has the label array and its ids are in ``0 .. num_classes - 1``
        or -1, and some point is labelled at all. Reads only the label arrays (memory-mapped) and
        the scenes' meta.json, so it costs a fraction of one epoch's reading; a DitrError / SceneError
        naming the scene and the array otherwise. Returns what it counted. A dataset whose model
        does not segment (the D-DITR student) has nothing to check.
        """
        summary: dict[str, Any] = {"scenes": len(self.paths), "points": 0, "labelled_points": 0, "arrays": []}
        if not self.segments:
            return summary
        classes = self.num_classes
        arrays: set[str] = set()
        for path in self.paths:
            key = label_array(path, self.segment_key)
            if key is None:
                found = sorted(p.stem for p in path.glob("segment*.npy"))
                wanted = f"dataset.segment {self.segment_key!r}" if self.segment_key else "a segment*.npy label array"
                raise DitrError(f"scene {path}: has no {wanted} (label arrays there: {found or 'none'}); "
                                "training would see only ignored points and learn nothing")
            arrays.add(key)
            file = path / f"{key}.npy"
            try:
                labels = np.load(file, mmap_mode="r", allow_pickle=False)
                points = np.load(path / COORD_FILE, mmap_mode="r", allow_pickle=False).shape[0]
            except Exception as exc:  # numpy raises several types for damaged files
                raise SceneError(file, key, f"cannot be read as a .npy array ({exc})") from None
            if labels.shape != (points,) or not np.issubdtype(labels.dtype, np.integer):
                raise SceneError(file, key, f"{labels.dtype} {labels.shape}: expected ({points},) integer class ids")
            if labels.size:
                low, high = int(labels.min()), int(labels.max())
                if low < -1:
                    raise SceneError(file, key, f"contains {low}; ids must be >= 0 or -1 (ignore)")
                if classes is not None and high >= classes:
                    count = int((np.asarray(labels) >= classes).sum())
                    raise SceneError(file, key, f"holds class id {high} ({count} points) but dataset.num_classes "
                                                f"is {classes} (ids 0..{classes - 1}, -1 = ignore)")
            summary["points"] += points
            summary["labelled_points"] += int((np.asarray(labels) >= 0).sum())
        summary["arrays"] = sorted(arrays)
        if self.paths and summary["labelled_points"] == 0:
            raise DitrError(f"no point of the {len(self.paths)} {self.mode} scenes is labelled (every id of "
                            f"{', '.join(summary['arrays'])} is -1): training would learn nothing")
        return summary

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index, item_rng())

    # ------------------------------------------------------------------------------------------ stages
    def get(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """The sample of scene ``index`` (modulo the number of scenes) drawn with ``rng``.

        The composition of the public stages: :meth:`raw_sample`, :meth:`voxelise`, the views'
        image inputs (the cached table, or the network inputs of the online VFM, which the model
        runs on the batch) and :meth:`finish`.
        """
        path = self.paths[index % len(self.paths)]
        if self.labels_required:  # labels the loss cannot take fail here, naming the file, not in the loss
            scene = Scene.load(path, check_images=False, num_classes=self.num_classes, segment=self.segment_key)
        else:
            scene = Scene.load(path, check_images=False)
        sample, views = self.raw_sample(scene, rng)
        fragments, split = self._run_pipelines(sample, rng)
        table = pixels = None
        if self.features is not None:
            flips, patch_grids = self._flips(fragments)
            variants = [self.jitter.draw(rng) if v is not None else 0 for v in views] if self.jitter else None
            if self.features.online and views:
                pixels = self.features.pixels(views, flips, patch_grids, self.jitter, variants)
            elif not self.features.online:
                table = self.features.cached_table(scene, views, flips, patch_grids, self.jitter, variants)
        outs = [self.finish(s, table, pixels, rng) for s in fragments]
        if split:
            item = {"fragments": outs, "origin_segment": torch.from_numpy(sample["origin_segment"]),
                    "name": scene.name}
            if "represented_by" in fragments[0]:
                item["represented_by"] = torch.from_numpy(fragments[0]["represented_by"])
            return item
        return outs[0]

    def raw_sample(self, scene: Scene, rng: np.random.Generator) -> tuple[Sample, list[View | None]]:
        """(the scene's points as a sample, the views it uses): the input attributes, ``segment``
        (-1 where the scene has none; outside training also ``origin_segment``), Mix3D's draw and,
        for a model that reads images, the selected frames with the RAW points projected into them."""
        sample: Sample = {"name": scene.name, "coord": scene.coord.copy(),
                          "index": np.arange(scene.num_points, dtype=np.int64)}
        attrs = scene.attributes
        if "color" in attrs:
            sample["color"] = attrs["color"].astype(np.float32)
        if "normal" in attrs:
            sample["normal"] = attrs["normal"].copy()
        if "strength" in attrs:
            sample["strength"] = attrs["strength"].reshape(-1, 1).copy()
        missing = [n for n in self.input_features if n != "coord" and n not in sample]
        if missing:
            raise DitrError(f"scene {scene.path or scene.name}: dataset.input_features needs {missing}, which the "
                            f"scene lacks ({', '.join(n + '.npy' for n in missing)}): {_how_to_get(missing[0])}")
        segment = scene.segment(self.segment_key)
        n = scene.num_points
        if segment is None and self.labels_required:
            raise DitrError(f"scene {scene.path}: has no {self.segment_key or 'segment*'} label array: a training "
                            "sample would have only ignored points (check dataset.segment)")
        sample["segment"] = segment.copy() if segment is not None else np.full(n, -1, np.int64)
        if self.mode != "train":
            sample["origin_segment"] = sample["segment"].copy()
        if self.mix3d_p > 0:
            sample["mix3d"] = bool(rng.random() < self.mix3d_p)
        views: list[View | None] = []
        if self.use_images:
            views = self._select_frames(scene, rng)
            self._add_correspondences(sample, scene, views)
        return sample, views

    def voxelise(self, sample: Sample, rng: np.random.Generator) -> list[Sample]:
        """Every voxelised sample of a raw ``sample``: the mode's pipeline output (one sample; in
        ``test`` mode every fragment of every ``test_time`` variant, each with ``index``, the rows
        of its points in the scene)."""
        return self._run_pipelines(sample, rng)[0]

    def _run_pipelines(self, sample: Sample, rng: np.random.Generator) -> tuple[list[Sample], bool]:
        """(voxelised samples, whether they are fragments: a pipeline returned a list, or several ran)."""
        shared = self.shared(dict(sample), rng)
        assert not isinstance(shared, list)  # the shared steps end before the fragmenting GridSample
        results = [pipeline(dict(shared), rng) for pipeline in self.pipelines]
        split = isinstance(results[0], list) or len(results) > 1
        return [f for r in results for f in (r if isinstance(r, list) else [r])], split

    @staticmethod
    def _flips(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
        """(view flips, patch grids) of voxelised samples: flips are known only after the transforms."""
        flips, patch_grids = samples[0]["view_flipped"], samples[0]["patch_grids"]
        if any(not np.array_equal(s["view_flipped"], flips) for s in samples):
            raise DitrError("test-time variants flipped images differently; ImageFlip belongs to training only")
        return flips, patch_grids

    def feature_table(self, scene: Scene, views: Sequence[View | None], samples: Sequence[Sample],
                      on_batch: Callable[[int, int], None] | None = None) -> torch.Tensor | None:
        """(M, D) patch features of the views, on the CPU, once for all voxelised ``samples`` of a
        scene: from the cache, or the feature source's VFM run now (online). None for a model that
        reads no images. ``on_batch(done, total)`` reports the VFM's batches.

        :meth:`get` does not call this: in a data-loader worker it hands the online VFM's network
        inputs to the model instead of running the VFM itself."""
        if self.features is None:
            return None
        flips, patch_grids = self._flips(samples)
        return self.features.table(scene, views, flips, patch_grids, on_batch)

    def voxel_size(self) -> float | None:
        """Voxel size the model sees (the pipeline's last GridSample: a pre-grid before it only thins
        the raw points), None without one."""
        steps = [t for t in self.transforms.transforms if isinstance(t, GridSample)]
        return steps[-1].grid_size if steps else None

    def centres(self) -> bool:
        """Whether the pipeline centres the scene (a CenterShift): a part of a voxelised sample
        (a chunk of ``ditr predict``) is then centred likewise, so that it looks like a training crop."""
        return any(isinstance(t, CenterShift) for t in self.transforms.transforms)

    def _select_frames(self, scene: Scene, rng: np.random.Generator) -> list[View | None]:
        count = self.images.views_per_sample
        rule = self.images.train_views if self.mode == "train" else self.images.eval_views
        picked: list[View | None] = [scene.views[i] for i in pick_frames(len(scene.views), count, rule, rng)]
        if self.images.pad_views and count is not None and len(picked) < count:
            if not scene.views and not self.images.resolution:
                raise DitrError(f"scene {scene.path} has no views: padding needs images.resolution")
            picked += [None] * (count - len(picked))
        return picked

    def _add_correspondences(self, sample: Sample, scene: Scene, views: list[View | None]) -> None:
        real = [v for v in views if v is not None]
        corr = project_cached(dataclasses.replace(scene, views=real), self.projection, self.correspondences)
        n, nv = scene.num_points, len(views)
        slot = np.array([v is not None for v in views], bool)
        uv = np.zeros((nv, n, 2), np.float32)
        visible = np.zeros((nv, n), bool)
        depth = np.zeros((nv, n), np.float32)
        uv[slot], visible[slot], depth[slot] = corr.uv.numpy(), corr.visible.numpy(), corr.depth.numpy()
        features = self.features
        assert features is not None
        pad = features.patch_grid(real[0]) if real else None
        if pad is None and len(real) < nv:  # only padding: its size comes from images.resolution
            pad = features.patch_grid(None)
        sample.update(view_names=[v.name if v else "" for v in views],
                      pixel_uv=uv, visible=visible, view_depth=depth, view_flipped=np.zeros(nv, bool),
                      view_valid=slot,
                      image_sizes=np.array([[v.height, v.width] if v else [1, 1] for v in views],
                                           np.int64).reshape(-1, 2),
                      patch_grids=np.array([features.patch_grid(v) if v else pad for v in views],
                                           np.int64).reshape(-1, 2))

    def finish(self, sample: Sample, table: torch.Tensor | None, pixels: torch.Tensor | None,
               rng: np.random.Generator) -> dict[str, Any]:
        """Model-ready tensors of a voxelised sample, one item for :func:`~ditr.data.collate`:
        ``feat`` from the input features, the image lookup (``img_index`` / ``img_weight`` /
        ``img_seen``, with ``img_table`` = ``table`` and ``images`` = ``pixels`` when given), the
        evaluation keys (``index``, ``inverse``, ``origin_segment``) and metadata."""
        parts = [sample[name].reshape(len(sample["coord"]), -1) for name in self.input_features]
        out: dict[str, Any] = {
            "coord": torch.from_numpy(np.ascontiguousarray(sample["coord"], np.float32)),
            "feat": torch.from_numpy(np.concatenate(parts, 1).astype(np.float32)),
            "segment": torch.from_numpy(sample["segment"].astype(np.int64)),
            "name": sample["name"],
        }
        if "grid_coord" in sample:
            out["grid_coord"] = torch.from_numpy(sample["grid_coord"].astype(np.int64))
        for key in ("index", "inverse", "origin_segment"):
            if key in sample and not (key == "origin_segment" and "inverse" not in sample):
                out[key] = torch.from_numpy(sample[key].astype(np.int64))
        if "mix3d" in sample:
            out["mix3d"] = sample["mix3d"]
        if self.use_images:
            index, weight, seen = build_lookup(sample["pixel_uv"], sample["visible"], sample["view_depth"],
                                               sample["image_sizes"], sample["patch_grids"], self.view_fusion, rng)
            out.update(img_index=torch.from_numpy(index), img_weight=torch.from_numpy(weight),
                       img_seen=torch.from_numpy(seen), view_flipped=torch.from_numpy(sample["view_flipped"]),
                       view_valid=torch.from_numpy(sample["view_valid"]), view_names=sample["view_names"],
                       num_cells=int((sample["patch_grids"][:, 0] * sample["patch_grids"][:, 1]).sum()))
            if table is not None:
                out["img_table"] = table
            if pixels is not None:
                out["images"] = pixels
        return out
