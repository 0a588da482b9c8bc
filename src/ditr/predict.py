"""``ditr predict``'s pieces around the forward: options, chunk plans, normals, scoring and output files.

The forward itself (a scene's loading steps, its chunks within the voxel budget, the model, the
votes) is the inference service, :class:`ditr.inference.Predictor`, which ``ditr evaluate``, the
demo and the distillation evaluation use as well. This module holds what it is configured with and
what ``ditr predict`` makes of its result:

* :class:`PredictOptions` and :func:`inference_config` (the stored run config set up for
  prediction: feature source, views, no augmentation);
* :func:`plan_chunks`: a voxelised scene is split at the (point-weighted) median of its longer
  horizontal axis, again and again, until every chunk (its core plus ``overlap`` metres of context
  around it) stands for at most ``max_points`` of the scene's points: the number a user knows from
  the file, and a bound on the voxels, which the model's memory grows with (a voxel holds at least
  one point). The cores partition the scene, so every voxel, and through the voxel inverse map
  every point, gets a prediction. Where chunks overlap, their votes are weighted from 1 at the
  core's border to 0 at ``overlap`` metres out, so a voxel is decided mostly by the chunk in which
  it has context on all sides. A scene of at most ``max_points`` points is one chunk: exactly the
  forward of ``ditr evaluate``;
* :func:`add_missing_normals` (the estimator of :mod:`ditr.normals`) for scans stored without the
  normals a model reads;
* :class:`Prediction` (per-point labels and probabilities, and what they took), :func:`score`
  against the scene's ground truth and :func:`write_outputs` (labels, PLY, renders, summary).

Image features (DITR): the patch features of the views are computed once per scene (online with
the checkpoint's VFM, or read from a ``ditr features`` cache) into one table that every chunk
looks its points up in, so chunking never runs the VFM twice. Points no view sees get zero image
features (or the learned "missing" embedding), as in training; how many they are is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configs import RunConfig
from .errors import DitrError
from .normals import scene_normals
from .scene import Scene


@dataclass
class PredictOptions:
    """How to predict.

    ``max_points``: the scene's points per model forward (the memory budget: their voxels are
    fewer); None forwards every voxelisation whole, as ``ditr evaluate`` does. ``overlap``: metres
    of context around a chunk. ``tta``: vote over every fragment of every ``test_time`` variant.
    ``estimate_normals``: estimate the normals a model reads when the scene has none (else that is
    an error, as in training). ``views`` and ``features`` set the config up
    (:func:`inference_config`): ``views`` None keeps the checkpoint's evaluation views (e.g. 10
    evenly spaced), ``"all"`` takes every view of the scene, a number that
    many evenly spaced ones; ``features`` a ``ditr features`` cache (default: the VFM run online).
    """

    max_points: int | None = 200_000
    overlap: float = 1.0
    tta: bool = False
    views: str | int | None = None
    features: str | Path | None = None
    estimate_normals: bool = True


@dataclass
class Chunk:
    """Rows of a voxelised sample that go through the model together, and their vote weights."""

    members: np.ndarray  # (m,) ascending rows
    weight: np.ndarray   # (m,) float32: 1 in the core, falling to 0 at ``overlap`` metres outside it


@dataclass
class Prediction:
    """Per-point result of :meth:`ditr.inference.Predictor.predict` and what it took."""

    labels: np.ndarray                 # (N,) int64, arg-max of ``probs``
    probs: np.ndarray                  # (N, C) float32, mean softmax over chunks / fragments / variants
    chunks: int
    passes: int                        # voxelisations run (1, or fragments x variants with TTA)
    voxels: int                        # voxels of the first voxelisation
    views: list[str]                   # views whose image features were used
    points_seen: int | None            # points at least one used view sees (None: image-free model)
    normals_estimated: bool
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: (N,) int64 ground truth as the model's data reads it (``dataset.segment``; -1 where the scene has none)
    segment: np.ndarray | None = None


# ------------------------------------------------------------------------------------------ chunks
def plan_chunks(coord: np.ndarray, max_points: int | None, overlap: float,
                points: np.ndarray | None = None) -> list[Chunk]:
    """Chunks of rows of ``coord`` (M, 3) that stand for at most ``max_points`` points each and whose
    cores partition all rows; ``points`` (M,): how many of the scene's points each row (voxel) stands
    for (default one each); ``max_points`` None: one chunk of every row.

    A core is split at the point-weighted median of its longer horizontal axis while its chunk (core
    + context within ``overlap`` metres of the core's box) is over budget. A core of a quarter of the
    budget or less (or a single row) is not split further: its context is then the nearest rows that
    fit, so very dense context shrinks instead of multiplying the chunks.
    """
    if max_points is not None and max_points < 1:
        raise DitrError(f"max_points must be at least 1, got {max_points}")
    if overlap < 0:
        raise DitrError(f"overlap must be >= 0 metres, got {overlap}")
    n = len(coord)
    weight = np.ones(n, np.int64) if points is None else np.asarray(points, np.int64)
    if max_points is None or weight.sum() <= max_points:
        return [Chunk(np.arange(n), np.ones(n, np.float32))]
    xy = np.asarray(coord[:, :2], np.float64)
    chunks: list[Chunk] = []
    cells = [np.arange(n)]
    while cells:
        core = cells.pop()
        lo, hi = xy[core].min(0), xy[core].max(0)
        gap = np.maximum(np.maximum(lo - xy, xy - hi), 0.0)
        dist = np.hypot(gap[:, 0], gap[:, 1])  # distance to the core's box, 0 inside it
        near = np.flatnonzero(dist <= overlap)
        over = weight[near].sum() > max_points
        if over and len(core) > 1 and weight[core].sum() > max_points // 4:
            ordered = core[np.argsort(xy[core, int(np.argmax(hi - lo))], kind="stable")]
            cumulative = np.cumsum(weight[ordered])
            half = int(np.clip(np.searchsorted(cumulative, cumulative[-1] / 2, side="right"), 1, len(core) - 1))
            cells += [ordered[half:], ordered[:half]]
            continue
        if over:  # the core, then the nearest context rows while the points fit
            in_core = np.zeros(n, bool)
            in_core[core] = True
            ordered = near[np.lexsort((dist[near], ~in_core[near]))]
            fits = np.cumsum(weight[ordered]) <= max_points
            fits[:len(core)] = True
            near = np.sort(ordered[fits])
        chunk_weight = (dist[near] == 0) if overlap == 0 else np.clip(1.0 - dist[near] / overlap, 0.0, 1.0)
        chunks.append(Chunk(near, chunk_weight.astype(np.float32)))
    return chunks


# ------------------------------------------------------------------------------------------ normals
def add_missing_normals(scene: Scene, input_features: list[str], voxel_size: float) -> bool:
    """Estimate ``normal`` in memory when the model reads normals the scene does not have; whether it did."""
    if "normal" not in input_features or "normal" in scene.attributes:
        return False
    scene.attributes["normal"] = scene_normals(scene.coord, scene.views, cell=2.5 * voxel_size)
    return True


# ------------------------------------------------------------------------------------------ config
def inference_config(config: RunConfig, options: PredictOptions) -> RunConfig:
    """The checkpoint's config set up for prediction: feature source, views, no augmentation."""
    config = config.copy()
    if not config.kind.needs_images_at_inference:
        return config
    vfm, images = config.vfm, config.images
    if options.features is not None:
        vfm.cache, vfm.online = str(options.features), False
    else:
        vfm.online = True
    images.color_jitter, images.jitter_variants = None, 0  # (a stored config stays valid: variants need a jitter)
    if options.views == "all":
        images.eval_views = "all"
    elif options.views is not None:
        if int(options.views) < 1:
            raise DitrError(f"views must be 'all' or at least 1, got {options.views}")
        images.views_per_sample, images.eval_views = int(options.views), "evenly"
    return config


# ------------------------------------------------------------------------------------------ scoring
def score(scene: Scene, labels: np.ndarray, config: RunConfig) -> dict[str, Any]:
    """mIoU of ``labels`` against the scene's ground truth, or why there is none.

    The ground truth is the config's segment key (``segment20`` ...) or the scene's own; it is
    scored only in the model's class space: a scene whose class names differ is not compared.
    """
    from .engine.metrics import confusion_matrix, segmentation_metrics

    data = config.dataset
    key = data.segment
    gt = scene.segment(key) if key and key in scene.attributes else scene.segment()
    if gt is None:
        return {"scored": False, "reason": "the scene has no ground-truth labels (segment*.npy)"}
    names = data.class_names
    if names and scene.class_names and list(scene.class_names) != list(names):
        return {"scored": False, "reason": f"the scene's classes ({len(scene.class_names)}: "
                f"{', '.join(scene.class_names[:4])}, ...) differ from the model's ({len(names)}: "
                f"{', '.join(names[:4])}, ...)"}
    num_classes = config.num_classes()
    ignore = data.ignore_index
    bad = (gt != ignore) & ((gt < 0) | (gt >= num_classes))
    if bad.any():
        return {"scored": False, "reason": f"{int(bad.sum())} ground-truth labels are outside the model's "
                f"{num_classes} classes"}
    conf = confusion_matrix(torch.from_numpy(labels), torch.from_numpy(gt.astype(np.int64)), num_classes, ignore)
    return {"scored": True, "labelled_points": int(conf.sum()),
            **segmentation_metrics(conf, names if names and len(names) == num_classes else None)}


# ------------------------------------------------------------------------------------------ outputs
def render_view_ids(num_views: int, count: int) -> list[int]:
    """``count`` evenly spaced views of a scene (all of them when it has fewer)."""
    if num_views == 0 or count <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, num_views - 1, min(count, num_views))})


#: The files ``ditr predict`` writes (``view_*.png`` besides): what a reused ``--out`` is cleared of.
OUTPUT_FILES = ("labels.npy", "probs.npy", "pred.ply", "classes.json", "legend.png", "topdown.png", "pred.html",
                "summary.json")


def _is_output(name: str) -> bool:
    return name in OUTPUT_FILES or (name.startswith("view_") and name.endswith(".png"))


def _move_into_place(staging: Path, out: Path) -> None:
    """Make ``staging`` the folder ``out``: a previous prediction there is replaced as a whole (never
    new labels beside an old summary); anything else the folder held is kept."""
    import os
    import shutil
    import uuid

    if not out.exists():
        os.replace(staging, out)
        return
    if not out.is_dir():
        raise DitrError(f"--out {out}: exists and is not a directory")
    old = out.parent / f".{out.name}.{uuid.uuid4().hex}.old"
    os.replace(out, old)
    os.replace(staging, out)
    for entry in old.iterdir():  # the user's own files: back into the folder
        if not _is_output(entry.name) and not (out / entry.name).exists():
            os.replace(entry, out / entry.name)
    shutil.rmtree(old, ignore_errors=True)


def write_outputs(out_dir: str | Path, scene: Scene | str | Path, pred: Prediction, config: RunConfig,
                  *, source: str, options: PredictOptions, device: str, render_views: int = 3,
                  save_probs: bool = False, html: bool = False, elapsed: float | None = None) -> dict[str, Any]:
    """Write labels, PLY, class table, legend, renders and ``summary.json`` into ``out_dir``; the summary.

    ``scene`` is the scene predicted (loaded once by the caller; a directory is loaded here).
    ``source`` names the checkpoint (or bundle) in the summary; ``elapsed``: seconds the run took
    before writing (model loading included), for the total.

    Everything is written into a fresh staging folder next to ``out_dir`` (``.NAME.*.tmp``) that is
    moved into place at the end, so an interrupted or failing run leaves ``out_dir`` as it was, and a
    reused ``out_dir`` never mixes two predictions. Views that see no point are warned about
    (``summary["warnings"]``) and rendered without labels.
    """
    import shutil
    import tempfile

    from .fileio import DIR_MODE

    out = Path(out_dir)
    if out.is_symlink():  # replace the folder it points to, not the link
        out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        staging.chmod(DIR_MODE)
        summary = _write_outputs(staging, scene, pred, config, source=source, options=options, device=device,
                                 render_views=render_views, save_probs=save_probs, html=html, elapsed=elapsed)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _write_outputs(out: Path, scene: Scene | str | Path, pred: Prediction, config: RunConfig,
                   *, source: str, options: PredictOptions, device: str, render_views: int,
                   save_probs: bool, html: bool, elapsed: float | None) -> dict[str, Any]:
    import warnings

    from .engine.logging import to_jsonable
    from .fileio import atomic_save_npy, atomic_write_json
    from .io.ply import write_ply
    from .viz.render import label_colors, render_legend, render_topdown, render_view_labels

    timer = time.perf_counter()
    if not isinstance(scene, Scene):
        scene = Scene.load(scene, check_images=False)
    num_classes = pred.probs.shape[1]
    names = list(config.dataset.class_names or [f"class {i}" for i in range(num_classes)])
    counts = np.bincount(pred.labels, minlength=num_classes)
    files = {"labels": atomic_save_npy(out / "labels.npy", pred.labels)}
    if save_probs:
        files["probs"] = atomic_save_npy(out / "probs.npy", pred.probs.astype(np.float16))
    files["ply"] = write_ply(out / "pred.ply", scene.coord, label_colors(pred.labels, num_classes),
                             label=pred.labels.astype(np.int32), confidence=pred.probs.max(1).astype(np.float32))
    colors = label_colors(np.arange(num_classes), num_classes)
    files["classes"] = atomic_write_json(out / "classes.json", {
        "points": int(scene.num_points),
        "classes": [{"id": i, "name": n, "color": colors[i].tolist(), "points": int(c)}
                    for i, (n, c) in enumerate(zip(names, counts))]})
    files["legend"] = render_legend(names, counts.tolist(), out / "legend.png")
    files["topdown"] = render_topdown(scene.coord, pred.labels, names, out / "topdown.png",
                                      title=f"{scene.name}: predicted classes")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        views = render_view_labels(scene, pred.labels, names, out, render_view_ids(len(scene.views), render_views),
                                   config.projection)
    render_warnings = [str(w.message) for w in caught]
    if html:
        from .viz.viewer import write_viewer

        files["html"] = write_viewer(out / "pred.html", scene.coord, pred.labels, names,
                                     rgb=scene.attributes.get("color"), title=f"{scene.name}: predicted classes",
                                     views=scene.views)
    seen = pred.points_seen
    summary = {
        "checkpoint": source, "scene": str(scene.path), "points": scene.num_points,
        "model": config.kind.value,
        "uses_images": pred.points_seen is not None,
        "views_used": len(pred.views),
        "points_seen_by_camera": seen,
        "seen_by_camera_fraction": None if seen is None else round(seen / scene.num_points, 4),
        "points_unseen": None if seen is None else scene.num_points - seen,
        "image_features": None if seen is None else ("cache " + str(options.features) if options.features
                                                     else "online " + config.vfm.model),
        "voxels": pred.voxels, "chunks": pred.chunks, "passes": pred.passes,
        "max_points": options.max_points, "overlap_m": options.overlap, "tta": options.tta, "device": device,
        "normals_estimated": pred.normals_estimated,
        "evaluation": score(scene, pred.labels, config),
        "seconds": {**pred.seconds, "write_outputs": round(time.perf_counter() - timer, 3),
                    **({"total": round(elapsed + time.perf_counter() - timer, 3)} if elapsed is not None else {})},
        "peak_rss_mb": _peak_rss_mb(),
        "warnings": [*pred.warnings, *render_warnings],
        "files": sorted([p.name for p in files.values()] + [p.name for p in views] + ["summary.json"]),
    }
    summary = to_jsonable(summary)
    atomic_write_json(out / "summary.json", summary)
    return summary


def _peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far (Linux / macOS), for the memory budget's report."""
    try:
        import resource
        import sys
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
