"""The inference service: one forward of a whole scene, shared by every command that runs a trained model.

A :class:`Predictor` holds a model, the run config it was trained with and a device. Given a scene
(a loaded :class:`~ditr.scene.Scene` or its directory) it

1. runs the loading steps of evaluation through the dataset's public stages
   (:class:`~ditr.data.SceneDataset`: views picked, the RAW points projected into them, the config's
   ``val`` pipeline, or with TTA the ``test`` pipeline: every voxelisation fragment of every
   ``test_time`` variant), estimating missing normals if asked;
2. computes the views' patch-feature table once per scene (the feature cache, or the VFM run now:
   the model's own VFM, so that one VFM is in memory);
3. cuts every voxelisation into chunks within the voxel budget (:func:`ditr.predict.plan_chunks`)
   and forwards each chunk;
4. votes (:class:`Votes`, the one voting rule): each chunk's softmax probabilities count for its
   voxels with the chunk's weights, then every point takes its voxel's probabilities (through the
   voxel ``inverse``) or a fragment's points theirs (through ``index``), averaged over the
   voxelisations that covered it (after a pre-grid, every point takes its pre-grid
   representative's average).

:meth:`Predictor.predict` returns a :class:`~ditr.predict.Prediction`: per-point probabilities and
labels, and what it took (chunks, passes, voxels, views, points seen by a camera, seconds, warnings).
:meth:`Predictor.batch` returns the model-ready batch of one scene's single voxelisation (the
batch of the forward of a one-chunk scene) for callers that need more than the class scores.

Who uses it: ``ditr predict`` (chunked, optionally with TTA), ``ditr evaluate``
(:func:`ditr.training.evaluate`: every scene in one chunk, scored on every original point, with and
without TTA), ``ditr demo`` (its prediction pictures) and the distillation evaluation
(:func:`ditr.distill.evaluate_distillation`, :func:`ditr.demo.render_student_vs_teacher`: the
student's batch through :meth:`Predictor.batch`). The trainer's validation between epochs does not:
it scores the batches of its data loader with :class:`~ditr.engine.evaluator.Evaluator`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .configs import RunConfig
from .data import SceneDataset, collate
from .data.sample import Sample, take
from .data.transforms import CenterShift
from .engine.evaluator import as_output
from .engine.loading import move_to
from .errors import DitrError
from .image_features import ImageFeatureSource
from .model_files import ModelFile, load_model, read_model_file
from .predict import Chunk, Prediction, PredictOptions, add_missing_normals, inference_config, plan_chunks
from .scene import Scene, View

#: Keys of a voxelised sample that index the raw points, not the voxels: never cut into chunks.
FULL_RESOLUTION_KEYS = ("inverse", "origin_segment", "represented_by")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class Votes:
    """Softmax votes for every point of a scene: the one voting rule of ditr's inference.

    A pass is one voxelisation of the scene (the ``val`` pipeline's, or one fragment of one
    ``test_time`` variant). :meth:`add_pass` takes its chunks' logits: within the pass, each voxel's
    probabilities are the chunks' softmax probabilities averaged with the chunks' weights (1 in a
    chunk's core, less in its context); every point then takes its voxel's probabilities (the pass's
    ``inverse``) or, for a fragment, its points theirs (``index``: their rows in the scene).
    :meth:`probabilities` is the mean over the passes that covered each point.

    Fragments of a pre-gridded scene (the outdoor test pipelines: a ``train``-mode GridSample with
    ``return_inverse`` before the fragmenting one) cover only the pre-grid's points; they carry
    ``represented_by``, and every scene point then takes the mean of its pre-grid representative,
    as the reference maps its summed votes back through the pre-grid's inverse.
    """

    def __init__(self, num_points: int, num_classes: int):
        self.num_classes = num_classes
        self.scores = torch.zeros(num_points, num_classes)
        self.votes = torch.zeros(num_points)
        self.represented_by: np.ndarray | None = None

    def add_pass(self, sample: Sample, chunks: Iterable[tuple[Chunk, Tensor]]) -> None:
        """One voxelisation ``sample`` (with ``inverse`` or ``index``) and its chunks' (m, C) logits."""
        m = len(sample["coord"])
        scores = torch.zeros(m, self.num_classes)
        weights = torch.zeros(m)
        for chunk, logits in chunks:
            probs = torch.softmax(logits.float(), 1).cpu()
            w = torch.from_numpy(chunk.weight)
            members = torch.from_numpy(chunk.members)
            scores.index_add_(0, members, probs * w[:, None])
            weights.index_add_(0, members, w)
        voxel_probs = scores / weights.clamp(min=1e-12)[:, None]
        if "inverse" in sample:  # one voxelisation: every point takes its voxel's vote
            self.scores += voxel_probs[torch.from_numpy(sample["inverse"])]
            self.votes += 1
        else:  # a fragment (or a pipeline without voxel inverse): its points are rows ``index`` of the scene
            index = torch.from_numpy(sample["index"])
            self.scores.index_add_(0, index, voxel_probs)
            self.votes.index_add_(0, index, torch.ones(len(index)))
            if "represented_by" in sample:
                self._represent(sample["represented_by"])

    def _represent(self, represented_by: np.ndarray) -> None:
        """Record the pre-grid map of the fragments; every fragment of a scene shares one."""
        if self.represented_by is None:
            self.represented_by = represented_by
        elif represented_by is not self.represented_by and not np.array_equal(represented_by, self.represented_by):
            raise ValueError("fragments of different pre-grid draws voted for one scene: the test pipeline's "
                             "pre-grid must run once for all test-time variants")

    def probabilities(self) -> Tensor:
        """(N, C) mean probabilities of every point; an error if some point got no vote."""
        scores, votes = self.scores, self.votes
        if self.represented_by is not None:  # every scene point takes its pre-grid representative's votes
            rows = torch.from_numpy(self.represented_by)
            scores, votes = scores[rows], votes[rows]
        if not bool((votes > 0).all()):  # the chunk plan guarantees coverage; never return a silent gap
            raise RuntimeError(f"{int((votes == 0).sum())} points got no prediction")
        return scores / votes[:, None]


@dataclass
class _Prepared:
    """A scene after the loading steps: its voxelisations and image-feature table, ready for the model."""

    scene: Scene
    data: SceneDataset
    sample: Sample                     # the raw sample (``segment``: the ground truth as the data reads it)
    views: list[View | None]
    passes: list[Sample]               # voxelised samples
    table: Tensor | None               # (M, D) on the device
    normals_estimated: bool
    seconds: dict[str, float] = field(default_factory=dict)


class Predictor:
    """Forwards whole scenes through a trained model: ``Predictor(model, config, device).predict(scene)``.

    ``config`` is the model's run config (as :func:`ditr.model_files.load_model` returns it, prepared
    by :func:`ditr.predict.inference_config` for prediction, or as stored for evaluation).
    ``features`` is the image-feature source of the scenes; by default the model's own VFM when the
    config computes features online (``vfm.online``), else the config's (the feature cache). The
    distillation evaluation passes its teacher.
    """

    def __init__(self, model: nn.Module, config: RunConfig, device: str | torch.device = "cpu", *,
                 features: ImageFeatureSource | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        if features is None and config.kind.needs_images_at_inference and config.vfm.online:
            features = getattr(model, "vfm", None)
            if features is None:
                raise DitrError("online image features need the model's VFM (vfm.online was not set when it "
                                "was built)")
        self.features = features
        self._datasets: dict[str, SceneDataset] = {}

    @classmethod
    def load(cls, source: str | Path | ModelFile, device: str | torch.device = "cpu", *, overrides: Sequence[str] = (),
             options: PredictOptions | None = None) -> Predictor:
        """The predictor of a model file (training state or ``.ditr`` bundle, a path or a read
        :class:`~ditr.model_files.ModelFile`): ``overrides`` (``key=value``, as ``--set``) change its
        stored run config; ``options`` set it up for prediction (:func:`ditr.predict.inference_config`:
        feature source, views, no augmentation); without them the config stays as trained (``ditr
        evaluate``: features from the cache the model was trained with, found on this machine from
        where it was recorded at training: :func:`ditr.stored_paths.locate`)."""
        from .stored_paths import cache_needed, given_keys, locate

        file = read_model_file(source)
        given = given_keys(overrides) | ({"vfm.cache"} if options is not None and options.features else set())

        def prepare(config: RunConfig) -> RunConfig:
            config = config.with_overrides(list(overrides), "--set")
            config = inference_config(config, options) if options is not None else config
            return locate(config, file.place, cache_needed(config), given, str(file))

        model, config = load_model(file, device, prepare=prepare)
        return cls(model, config, device)

    # ------------------------------------------------------------------------------------------ scenes
    def dataset(self, tta: bool = False) -> SceneDataset:
        """The loading steps of a scene: the ``val`` pipeline, or with ``tta`` the ``test`` pipeline."""
        mode = "test" if tta else "val"
        if mode not in self._datasets:
            self._datasets[mode] = SceneDataset([], None, self.config, mode, features=self.features)
        return self._datasets[mode]

    def batch(self, scene: Scene | str | Path, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """The model-ready batch of one scene, on the device: its ``val`` voxelisation (``inverse`` and
        ``origin_segment`` included) with the image-feature table, as the forward of a one-chunk scene
        sees it. ``rng`` (default: seed 0) draws the voxelisation's points."""
        rng = np.random.default_rng(0) if rng is None else rng
        prepared = self._prepare(scene, False, rng, estimate_normals=False)
        if len(prepared.passes) != 1:
            raise DitrError(f"the val pipeline voxelises a scene {len(prepared.passes)} times; a batch is one")
        return self._model_batch(prepared.data, prepared.passes[0], prepared.table, rng)

    def _prepare(self, scene: Scene | str | Path, tta: bool, rng: np.random.Generator, *,
                 estimate_normals: bool, progress: Progress | None = None) -> _Prepared:
        timer = time.perf_counter()
        if not isinstance(scene, Scene):
            scene = Scene.load(scene, check_images=False)
        data = self.dataset(tta)
        normals = estimate_normals and add_missing_normals(scene, data.input_features, data.voxel_size() or 0.02)
        if progress is not None:
            progress("projection", 0, 1)
        sample, views = data.raw_sample(scene, rng)
        passes = data.voxelise(sample, rng)
        if progress is not None:
            progress("projection", 1, 1)
        seconds = {"load_project_voxelise": time.perf_counter() - timer}
        timer = time.perf_counter()
        on_batch = None if progress is None else (lambda done, total: progress("2D features", done, total))
        table = data.feature_table(scene, views, passes, on_batch)
        if table is not None:
            table = table.to(self.device)
            seconds["image_features"] = time.perf_counter() - timer
        return _Prepared(scene, data, sample, views, passes, table, normals, seconds)

    def _model_batch(self, data: SceneDataset, part: Sample, table: Tensor | None,
                     rng: np.random.Generator) -> dict[str, Any]:
        """A (part of a) voxelised sample as a batch on the device, the scene's table attached."""
        batch = move_to(collate([data.finish(part, None, None, rng)]), self.device)
        if table is not None:
            batch["img_table"] = table  # shared by every chunk, never copied per chunk
        return batch

    # ------------------------------------------------------------------------------------------ forward
    @torch.no_grad()
    def predict(self, scene: Scene | str | Path, options: PredictOptions | None = None, *,
                rng: np.random.Generator | None = None, progress: Progress | None = None) -> Prediction:
        """Probabilities and labels of every point of ``scene``, forwarded in chunks of at most
        ``options.max_points`` of the scene's points (None: whole), over every TTA pass with ``options.tta``.

        ``rng`` (default: seed 0) draws what the pipelines draw; ``progress(stage, done, total)``
        reports the stages ``projection``, ``2D features`` and ``chunks``.
        """
        options = options or PredictOptions()
        if not self.config.kind.segments:
            raise DitrError("this is a distillation checkpoint (it predicts 2D features, not classes): "
                            "fine-tune it first (ditr train ... method/ptv3 --init CHECKPOINT)")
        rng = np.random.default_rng(0) if rng is None else rng
        prepared = self._prepare(scene, options.tta, rng, estimate_normals=options.estimate_normals,
                                 progress=progress)
        scene, data, passes = prepared.scene, prepared.data, prepared.passes
        timer = time.perf_counter()
        plans = [plan_chunks(p["coord"], options.max_points, options.overlap, points_per_row(p)) for p in passes]
        total, done = sum(len(c) for c in plans), [0]

        def tick() -> None:
            done[0] += 1
            if progress is not None:
                progress("chunks", done[0], total)

        votes = Votes(scene.num_points, self.config.num_classes())
        for sample, chunks in zip(passes, plans):
            votes.add_pass(sample, self._forward_chunks(prepared, sample, chunks, rng, tick))
        probs = votes.probabilities()
        seconds = {**prepared.seconds, "model": time.perf_counter() - timer}
        seen = prepared.sample["visible"].any(0) if "visible" in prepared.sample else None
        pred = Prediction(labels=probs.argmax(1).numpy().astype(np.int64), probs=probs.numpy(), chunks=total,
                          passes=len(passes), voxels=len(passes[0]["coord"]),
                          views=[v.name for v in prepared.views if v is not None] if data.use_images else [],
                          points_seen=None if seen is None else int(seen.sum()),
                          normals_estimated=prepared.normals_estimated,
                          seconds={k: round(v, 3) for k, v in seconds.items()},
                          segment=prepared.sample["segment"].astype(np.int64))
        pred.warnings += _visibility_warnings(scene, pred, data.use_images)
        if prepared.normals_estimated:
            pred.warnings.append("the scene has no normal.npy: normals were estimated from the points "
                                 "(local covariance), an approximation of the normals the model was trained with")
        return pred


    def _forward_chunks(self, prepared: _Prepared, sample: Sample, chunks: list[Chunk], rng: np.random.Generator,
                        on_chunk: Callable[[], None]) -> Iterable[tuple[Chunk, Tensor]]:
        """(chunk, its (m, C) logits) of one voxelisation, one model forward at a time (a generator:
        the votes take each chunk's logits before the next forward)."""
        data = prepared.data
        voxels = {k: v for k, v in sample.items() if k not in FULL_RESOLUTION_KEYS}
        m = len(voxels["coord"])
        for chunk in chunks:
            part = take(voxels, chunk.members) if len(chunk.members) < m else dict(voxels)
            if len(chunk.members) < m and data.centres():
                part = CenterShift(apply_z=False)(part, rng)
            batch = self._model_batch(data, part, prepared.table, rng)
            yield chunk, as_output(self.model(batch))["logits"]
            on_chunk()


def points_per_row(sample: Sample) -> np.ndarray:
    """(M,) how many of the scene's points each row of a voxelised ``sample`` predicts: its voxel's
    points (``inverse``), one for a fragment's point (``index``), or as many as that point represents
    after a pre-grid (``represented_by``)."""
    m = len(sample["coord"])
    if "inverse" in sample:
        return np.bincount(sample["inverse"], minlength=m)
    if "represented_by" in sample:
        return np.bincount(sample["represented_by"], minlength=len(sample["represented_by"]))[sample["index"]]
    return np.ones(m, np.int64)


def _visibility_warnings(scene: Scene, pred: Prediction, uses_images: bool) -> list[str]:
    if not uses_images:
        return []
    if not scene.views:
        return ["the scene has no views: a DITR model then predicts from 3D alone, with zero image "
                "features for every point (expect lower accuracy than with images)"]
    if not pred.points_seen:
        return [f"no camera sees any point of the scene ({len(pred.views)} views used): check cam_to_world "
                "(OpenCV camera -> scene frame) and the intrinsics; every point got zero image features"]
    return []
