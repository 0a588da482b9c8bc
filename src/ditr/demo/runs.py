"""The demo's units of work, each run in a worker process: one room, a share of the 2D features, one
training, one distillation, one evaluation; and the process pool that runs them side by side.

The demo's runs are independent until D-DITR's fine-tuning (which starts from the distilled
student), so on a machine with several cores they go to separate processes, one core each
(``torch`` threads set per worker), and the demo takes about the time of its longest chain instead
of the sum. Every run seeds itself from its config alone (rooms from their index, training from
``trainer.seed``), so its result does not depend on the process it ran in or on what ran before
there: a parallel demo gives the numbers of a sequential one.

Workers report to the parent through a queue (:func:`report`): ``("start", task)``,
``("step", task, step, total, info)``, ``("advance", task, count, total, info)`` and
``("line", task, text)``; the parent draws them
(:mod:`ditr.demo.pipeline`).
"""

from __future__ import annotations

import math
import multiprocessing
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..configs import RunConfig
from ..engine.trainer import Callback

#: The queue of the worker process this module runs in (None in a process that is not a worker).
_QUEUE: Any = None
#: Step reports are sent at most this often (seconds), plus the last step of a run.
REPORT_EVERY_S = 0.5


def _init_worker(queue: Any, threads: int) -> None:
    """Set up a worker: its torch threads and the queue its reports go to."""
    global _QUEUE
    _QUEUE = queue
    torch.set_num_threads(max(1, threads))


def worker_pool(workers: int, threads: int) -> tuple[ProcessPoolExecutor, Any]:
    """``workers`` fresh processes (spawned: no state copied from the parent) and their report queue."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                               initargs=(queue, threads))
    return pool, queue


def report(*message: Any) -> None:
    """Send a progress message to the parent (nothing outside a worker)."""
    if _QUEUE is not None:
        _QUEUE.put(message)


class ReportProgress(Callback):
    """Training progress of run ``name`` to the parent: steps with the loss, and each validation."""

    def __init__(self, name: str):
        self.name, self.last = name, -math.inf

    def on_step_end(self, trainer: Any, losses: Mapping[str, torch.Tensor]) -> None:
        now = time.monotonic()
        if now - self.last >= REPORT_EVERY_S or trainer.step >= trainer.total_steps:
            self.last = now
            report("step", self.name, trainer.step, trainer.total_steps, f"loss {float(losses['loss']):.3f}")

    def on_evaluate(self, trainer: Any, result: Any) -> None:
        metrics = result.metrics
        if "miou" in metrics:
            report("line", self.name, f"step {trainer.step}: validation mIoU {100 * metrics['miou']:.1f}%")
        elif "val_cosine" in metrics:
            report("line", self.name, f"step {trainer.step}: validation teacher cosine {metrics['val_cosine']:.3f}")


def make_room(directory: Path, index: int, count: int, seed: int, points: int, views: int) -> str:
    """Room ``index`` of the demo's set (reused when it exists with these settings)."""
    from ..io.synthetic import ensure_rooms

    return str(ensure_rooms(directory, count, seed, points, views, indices=[index])[0])


def features_run(task: str, rooms: list[Path], model: str, cache: Path, checkpoint: str | None,
                 total: int) -> dict[str, Any]:
    """The 2D features of ``rooms`` (every view and its mirror image) into ``cache``: a worker's
    share of the demo's feature stage, whose progress counts towards ``total`` images."""
    from ..vfm.extract import fill_scene_features

    return fill_scene_features(rooms, model, cache, checkpoint=checkpoint,
                               on_progress=lambda n: report("advance", task, n, total, "images"))


def train_run(name: str, config: RunConfig, work_dir: Path, train_rooms: list[Path], val_rooms: list[Path],
              init: str | None = None) -> dict[str, Any]:
    """Train one method (resuming in ``work_dir``); its steps, time and final checkpoint."""
    from ..engine.logging import read_jsonl
    from ..training import train

    report("start", name)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        if init is not None:  # the distilled student: its head is meant to be dropped, said once here
            warnings.filterwarnings("ignore", message=".*initialised .* tensors", category=UserWarning)
            report("line", name, "starts from the distilled student's backbone, with a new segmentation head")
        summary = train(config, work_dir, train_scenes=train_rooms, val_scenes=val_rooms, init=init, quiet=True,
                        callbacks=[ReportProgress(name)])
    val = [r for r in read_jsonl(work_dir / "metrics.jsonl") if r.get("kind") == "val" and r.get("miou") is not None]
    return {"steps": summary["step"], "train_seconds": round(time.perf_counter() - t0, 1),
            "val_miou": val[-1]["miou"] if val else None, "checkpoint": str(work_dir / "last.pt")}


def evaluate_run(name: str, checkpoint: str, test_rooms: list[Path]) -> dict[str, Any]:
    """Metrics of a final model on every point of the test rooms, and its labels of each room
    (for the figure that shows where the methods differ)."""
    from ..engine.logging import to_jsonable
    from ..inference import Predictor
    from ..training import evaluate

    report("start", name)
    metrics = to_jsonable(evaluate(checkpoint, test_rooms).metrics)
    predictor = Predictor.load(checkpoint)
    labels = {Path(room).name: predictor.predict(room).labels.astype(np.int16) for room in test_rooms}
    return {"metrics": metrics, "labels": labels}


def distill_run(name: str, config: RunConfig, work_dir: Path, train_rooms: list[Path], val_rooms: list[Path],
                picture: Path | None = None) -> dict[str, Any]:
    """D-DITR's stage 1 (``config``: :func:`ditr.demo.settings.distill_config`) on ``train_rooms``
    (labels unused), resuming in ``work_dir``; with ``picture``, the student beside the teacher there.

    Returns what the results row adds: the student checkpoint (the fine-tuning ``init``), the
    teacher cosine on the validation rooms, the distillation steps and time, the picture's path.
    """
    from ..distill import distill, evaluate_distillation
    from .figures import render_student_vs_teacher

    report("start", name)
    t0 = time.perf_counter()
    summary = distill(config, work_dir, train_scenes=train_rooms, val_scenes=val_rooms, quiet=True,
                      callbacks=[ReportProgress(name)])
    seconds = time.perf_counter() - t0
    checkpoint = work_dir / "last.pt"
    evaluation = evaluate_distillation(checkpoint, val_rooms, out=work_dir / "distill_eval.json")
    report("line", name, f"student cosine to the teacher on the validation rooms: {evaluation['cosine']:.3f}")
    result = {"teacher_cosine": evaluation["cosine"],
              "teacher_cosine_per_room": {k: v["cosine"] for k, v in evaluation["per_scene"].items()},
              "distill_steps": summary["step"], "distill_rooms": len(train_rooms),
              "distill_views": config.images.view_strategy, "distill_seconds": round(seconds, 1),
              "distill_checkpoint": str(checkpoint)}
    if picture is not None:
        first = Path(val_rooms[0])
        title = f"{first.name} (validation): teacher vs distilled student, one PCA basis"
        result["picture"] = str(render_student_vs_teacher(checkpoint, first, picture, title=title))
    return result
