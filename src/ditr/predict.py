"""Labels for every point of a scene of any size, within a memory budget (``ditr predict``).

A scene goes through the loading steps of evaluation (:class:`~ditr.data.SceneDataset`): views
picked, the RAW points projected into them, the config's ``val`` pipeline (or, with TTA, the
``test`` pipeline: every voxelisation fragment of every ``test_time`` variant). Only then is it cut
into chunks, because the model's memory grows with the voxels it sees, not with the raw points:
the voxelised scene is split at the median of its longer horizontal axis, again and again, until
every chunk (its core plus ``overlap`` metres of context around it) holds at most ``max_points``
voxels. The cores partition the scene, so every voxel, and through the voxel inverse map every
point, gets a prediction. Where chunks overlap, softmax probabilities are averaged with weights
falling from 1 at the core's border to 0 at ``overlap`` metres out, so a voxel is decided mostly by
the chunk in which it has context on all sides. A scene of at most ``max_points`` voxels is one
chunk: exactly the forward of ``ditr evaluate``.

Image features (DITR): the patch features of the views are computed once per scene (online with
the checkpoint's VFM, or read from a ``ditr features`` cache) into one table that every chunk
looks its points up in, so chunking never runs the VFM twice. Points no view sees get zero image
features (or the learned "missing" embedding), as in training; how many they are is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configs import RunConfig
from .data import SceneDataset, collate
from .data.sample import Sample, take
from .data.transforms import CenterShift, GridSample
from .engine.evaluator import as_output
from .engine.loading import move_to
from .errors import DitrError
from .scene import Scene, View

#: Keys of a voxelised sample that index the raw points, not the voxels: never cut into chunks.
FULL_RESOLUTION_KEYS = ("inverse", "origin_segment")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class PredictOptions:
    """How to predict. ``views``: None keeps the checkpoint's evaluation views (e.g. 10 evenly
    spaced), ``"all"`` takes every view of the scene, a number that many evenly spaced ones."""

    max_points: int = 200_000
    overlap: float = 1.0
    tta: bool = False
    views: str | int | None = None
    features: str | Path | None = None


@dataclass
class Chunk:
    """Rows of a voxelised sample that go through the model together, and their vote weights."""

    members: np.ndarray  # (m,) ascending rows
    weight: np.ndarray   # (m,) float32: 1 in the core, falling to 0 at ``overlap`` metres outside it


@dataclass
class Prediction:
    """Per-point result of :func:`predict` and what it took."""

    labels: np.ndarray                 # (N,) int64
    probs: np.ndarray                  # (N, C) float32, mean softmax over chunks / fragments / variants
    chunks: int
    passes: int                        # voxelisations run (1, or fragments x variants with TTA)
    voxels: int                        # voxels of the first voxelisation
    views: list[str]                   # views whose image features were used
    points_seen: int | None            # points at least one used view sees (None: image-free model)
    normals_estimated: bool
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ chunks
def plan_chunks(coord: np.ndarray, max_points: int, overlap: float) -> list[Chunk]:
    """Chunks of at most ``max_points`` rows whose cores partition all rows of ``coord`` (M, 3).

    A core is split at the median of its longer horizontal axis while its chunk (core + context
    within ``overlap`` metres of the core's box) is over budget. A core of a quarter of the budget
    or less is not split further: its context is then the nearest rows that fit, so very dense
    context shrinks instead of multiplying the chunks.
    """
    if max_points < 1:
        raise DitrError(f"max_points must be at least 1, got {max_points}")
    if overlap < 0:
        raise DitrError(f"overlap must be >= 0 metres, got {overlap}")
    n = len(coord)
    if n <= max_points:
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
        if len(near) > max_points and len(core) > max_points // 4:
            order = np.argsort(xy[core, int(np.argmax(hi - lo))], kind="stable")
            half = len(core) // 2
            cells += [core[order[half:]], core[order[:half]]]
            continue
        if len(near) > max_points:
            near = near[np.argpartition(dist[near], max_points - 1)[:max_points]]
        near.sort()
        weight = (dist[near] == 0) if overlap == 0 else np.clip(1.0 - dist[near] / overlap, 0.0, 1.0)
        chunks.append(Chunk(near, weight.astype(np.float32)))
    return chunks


# ------------------------------------------------------------------------------------------ normals
def estimate_normals(coord: np.ndarray, viewpoint: np.ndarray, cell: float = 0.05) -> np.ndarray:
    """(N, 3) float32 unit normals from the covariance of each point's neighbourhood.

    The neighbourhood of a point is its cube of ``cell`` metres and the 26 around it; all points of
    a cube share its normal (the direction of least spread), which is as fine as the voxels a model
    sees. Normals are turned towards ``viewpoint`` (the cameras' mean position: inside a room, the
    side a scanner saw). An approximation for scans stored without normals (the ScanNet sample),
    smoother than mesh normals at edges.
    """
    pts = coord.astype(np.float64)
    grid = np.floor((pts - pts.min(0)) / cell).astype(np.int64) + 1  # a margin of one cell
    dims = grid.max(0) + 2
    key = (grid[:, 0] * dims[1] + grid[:, 1]) * dims[2] + grid[:, 2]
    cells, inverse = np.unique(key, return_inverse=True)
    local = pts - pts.mean(0)
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    columns = [np.ones(len(pts))] + [local[:, a] for a in range(3)] + [local[:, a] * local[:, b] for a, b in pairs]
    moments = np.stack([np.bincount(inverse, weights=c, minlength=len(cells)) for c in columns], 1)
    summed = np.zeros_like(moments)
    for dx in (-1, 0, 1):  # a loop over the 27 neighbouring cells, each one vectorised over all cells
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                other = cells + (dx * dims[1] + dy) * dims[2] + dz
                pos = np.clip(np.searchsorted(cells, other), 0, len(cells) - 1)
                hit = cells[pos] == other
                summed[hit] += moments[pos[hit]]
    count = summed[:, :1]
    mean = summed[:, 1:4] / count
    second = summed[:, 4:] / count
    cov = np.empty((len(cells), 3, 3))
    for j, (a, b) in enumerate(pairs):
        cov[:, a, b] = cov[:, b, a] = second[:, j] - mean[:, a] * mean[:, b]
    normals = np.linalg.eigh(cov)[1][:, :, 0][inverse]  # eigenvector of the smallest eigenvalue
    flip = ((np.asarray(viewpoint, np.float64) - pts) * normals).sum(1) < 0
    normals[flip] *= -1
    return normals.astype(np.float32)


def _add_missing_normals(scene: Scene, input_features: list[str], voxel_size: float) -> bool:
    """Estimate ``normal`` in memory when the model reads normals the scene does not have."""
    if "normal" not in input_features or "normal" in scene.attributes:
        return False
    if scene.views:
        viewpoint = np.mean([v.cam_to_world[:3, 3] for v in scene.views], axis=0)
    else:
        viewpoint = (scene.coord.min(0) + scene.coord.max(0)) / 2
    scene.attributes["normal"] = estimate_normals(scene.coord, viewpoint, cell=2.5 * voxel_size)
    return True


# ------------------------------------------------------------------------------------------ data
class PredictionData(SceneDataset):
    """The dataset's loading steps for one scene, split where chunking goes in between."""

    def voxelised(self, scene: Scene, rng: np.random.Generator
                  ) -> tuple[list[Sample], list[View | None], np.ndarray | None]:
        """(voxelised samples of every pipeline, views used, per raw point: seen by a view)."""
        sample, views = self._raw_sample(scene, rng)
        seen = sample["visible"].any(0) if "visible" in sample else None
        results = [pipeline(dict(sample), rng) for pipeline in self.pipelines]
        return [f for r in results for f in (r if isinstance(r, list) else [r])], views, seen

    def image_table(self, scene: Scene, views: list[View | None], first: Sample,
                    progress: Progress | None) -> torch.Tensor | None:
        """(M, D) patch features of the views, once per scene: from the cache, or the VFM run now."""
        if self.features is None:
            return None
        on_batch = None if progress is None else (lambda done, total: progress("2D features", done, total))
        return self.features.table(scene, views, first["view_flipped"], first["patch_grids"], on_batch)

    def model_input(self, chunk: Sample, rng: np.random.Generator) -> dict[str, Any]:
        return self._finish(chunk, None, None, rng)

    def voxel_size(self) -> float | None:
        """Voxel size of the pipeline (its GridSample), for the normal estimate's neighbourhood."""
        steps = [t for t in self.transforms.transforms if isinstance(t, GridSample)]
        return steps[0].grid_size if steps else None

    def centres(self) -> bool:
        """Whether the pipeline centres the scene: chunks are then centred likewise (training
        centres every crop after SphereCrop, so a chunk looks like a training crop)."""
        return any(isinstance(t, CenterShift) for t in self.transforms.transforms)


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
    images.color_jitter = None
    if options.views == "all":
        images.eval_views = "all"
    elif options.views is not None:
        if int(options.views) < 1:
            raise DitrError(f"views must be 'all' or at least 1, got {options.views}")
        images.views_per_sample, images.eval_views = int(options.views), "evenly"
    return config


# ------------------------------------------------------------------------------------------ predict
@torch.no_grad()
def predict(model: torch.nn.Module, config: RunConfig, scene_dir: str | Path,
            options: PredictOptions | None = None, device: str | torch.device = "cpu",
            progress: Progress | None = None) -> Prediction:
    """Labels of every point of the scene in ``scene_dir`` (``config`` from :func:`inference_config`)."""
    options = options or PredictOptions()
    if not config.kind.segments:
        raise DitrError("this is a distillation checkpoint (it predicts 2D features, not classes): "
                        "fine-tune it first (ditr train ... method/ptv3 --init CHECKPOINT)")
    device = torch.device(device)
    model = model.to(device).eval()
    timer = time.perf_counter()
    seconds: dict[str, float] = {}
    scene = Scene.load(scene_dir, check_images=False)
    online = config.kind.needs_images_at_inference and config.vfm.online
    if online and getattr(model, "vfm", None) is None:
        raise DitrError("online image features need the model's VFM (vfm.online was not set when it was built)")
    # Online, the model's own source runs the VFM (on its device): one model in memory, not two.
    data = PredictionData([scene.path], None, config, "test" if options.tta else "val",
                          features=model.vfm if online else None)
    normals = _add_missing_normals(scene, data.input_features, data.voxel_size() or 0.02)
    rng = np.random.default_rng(0)
    if progress is not None:
        progress("projection", 0, 1)
    passes, views, seen = data.voxelised(scene, rng)
    if progress is not None:
        progress("projection", 1, 1)
    seconds["load_project_voxelise"] = time.perf_counter() - timer
    timer = time.perf_counter()
    table = data.image_table(scene, views, passes[0], progress)
    if table is not None:
        table = table.to(device)
        seconds["image_features"] = time.perf_counter() - timer
    timer = time.perf_counter()
    probs, total = _vote_passes(model, data, passes, table, options, device, rng, scene.num_points, progress)
    seconds["model"] = time.perf_counter() - timer
    pred = Prediction(labels=probs.argmax(1).numpy().astype(np.int64), probs=probs.numpy(), chunks=total,
                      passes=len(passes), voxels=len(passes[0]["coord"]),
                      views=[v.name for v in views if v is not None] if data.use_images else [],
                      points_seen=None if seen is None else int(seen.sum()), normals_estimated=normals,
                      seconds={k: round(v, 3) for k, v in seconds.items()})
    pred.warnings += _visibility_warnings(scene, pred, data.use_images)
    if normals:
        pred.warnings.append("the scene has no normal.npy: normals were estimated from the points "
                             "(local covariance), an approximation of the normals the model was trained with")
    return pred


def _vote_passes(model: torch.nn.Module, data: PredictionData, passes: list[Sample], table: torch.Tensor | None,
                 options: PredictOptions, device: torch.device, rng: np.random.Generator, num_points: int,
                 progress: Progress | None) -> tuple[torch.Tensor, int]:
    """((N, C) mean probabilities of every point over all passes and chunks, number of chunks)."""
    plans = [plan_chunks(p["coord"], options.max_points, options.overlap) for p in passes]
    total = sum(len(c) for c in plans)
    num_classes = model.seg_head.out_features
    scores = torch.zeros(num_points, num_classes)
    votes = torch.zeros(num_points)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress("chunks", done[0], total)

    for sample, chunks in zip(passes, plans):
        probs = _vote_chunks(model, data, sample, chunks, table, device, rng, num_classes, tick)
        if "inverse" in sample:  # one voxelisation: every point takes its voxel's vote
            scores += probs[torch.from_numpy(sample["inverse"])]
            votes += 1
        else:  # a test fragment: its points are rows ``index`` of the scene
            index = torch.from_numpy(sample["index"])
            scores.index_add_(0, index, probs)
            votes.index_add_(0, index, torch.ones(len(index)))
    if not bool((votes > 0).all()):  # the chunk plan guarantees coverage; never return a silent gap
        raise RuntimeError(f"{int((votes == 0).sum())} points got no prediction")
    return scores / votes[:, None], total


def _vote_chunks(model: torch.nn.Module, data: PredictionData, sample: Sample, chunks: list[Chunk],
                 table: torch.Tensor | None, device: torch.device, rng: np.random.Generator,
                 num_classes: int, on_chunk: Callable[[], None]) -> torch.Tensor:
    """(M, C) per-voxel softmax probabilities of one voxelisation, weighted over its chunks."""
    voxels = {k: v for k, v in sample.items() if k not in FULL_RESOLUTION_KEYS}
    m = len(voxels["coord"])
    scores = torch.zeros(m, num_classes)
    weights = torch.zeros(m)
    for chunk in chunks:
        part = take(voxels, chunk.members) if len(chunk.members) < m else dict(voxels)
        if len(chunk.members) < m and data.centres():
            part = CenterShift(apply_z=False)(part, rng)
        batch = collate([data.model_input(part, rng)])
        batch = move_to(batch, device)
        if table is not None:
            batch["img_table"] = table  # shared by every chunk, never copied per chunk
        probs = torch.softmax(as_output(model(batch))["logits"].float(), 1).cpu()
        w = torch.from_numpy(chunk.weight)
        members = torch.from_numpy(chunk.members)
        scores.index_add_(0, members, probs * w[:, None])
        weights.index_add_(0, members, w)
        on_chunk()
    return scores / weights.clamp(min=1e-12)[:, None]


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


def write_outputs(out_dir: str | Path, scene_dir: str | Path, pred: Prediction, config: RunConfig,
                  *, source: str, options: PredictOptions, device: str, render_views: int = 3,
                  save_probs: bool = False, html: bool = False, elapsed: float | None = None) -> dict[str, Any]:
    """Write labels, PLY, class table, legend, renders and ``summary.json`` into ``out_dir``; the summary.

    ``source`` names the checkpoint (or bundle) in the summary; ``elapsed``: seconds the run took
    before writing (model loading included), for the total.
    """
    from .engine.logging import to_jsonable
    from .fileio import atomic_save_npy, atomic_write_json
    from .io.ply import write_ply
    from .viz.render import label_colors, render_legend, render_topdown, render_view_labels

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timer = time.perf_counter()
    scene = Scene.load(scene_dir, check_images=False)
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
    views = render_view_labels(scene, pred.labels, names, out, render_view_ids(len(scene.views), render_views),
                               config.projection)
    if html:
        from .viz.viewer import write_viewer

        files["html"] = write_viewer(out / "pred.html", scene.coord, pred.labels, names,
                                     rgb=scene.attributes.get("color"), title=f"{scene.name}: predicted classes")
    seen = pred.points_seen
    summary = {
        "checkpoint": source, "scene": str(Path(scene_dir)), "points": scene.num_points,
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
        "warnings": pred.warnings,
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
