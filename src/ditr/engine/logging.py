"""What a run leaves for people to read: a JSONL metrics log, a progress bar and PNG plots.

Only rank 0 writes or draws; the other ranks get disabled objects so that calling code has no
rank checks. ``metrics.jsonl`` has one JSON object per line with a ``"kind"`` ("train", "val",
...) and the ``"step"`` it belongs to; NaN is written as null to keep the file standard JSON.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..fileio import atomic_write, atomic_write_text
from .loggers import MetricLogger


def to_jsonable(value: Any) -> Any:
    """Plain JSON values: tensors/NumPy scalars become numbers, NaN/inf become None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


class JsonlLogger:
    """Appends one JSON object per line to ``path``; a no-op when ``enabled`` is False.

    Each record is written with a single ``write`` of a complete line and flushed, so a crash
    loses at most the line being written and readers skip a torn last line. ``trackers``
    (:mod:`ditr.engine.loggers`: TensorBoard, W&B) receive every record too.
    """

    def __init__(self, path: str | Path, enabled: bool = True, trackers: Sequence[MetricLogger] = ()):
        self.path = Path(path)
        self.enabled = enabled
        self.trackers = list(trackers)
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(to_jsonable({"time": time.time(), **record})) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
        for tracker in self.trackers:
            tracker.log(record)

    def close(self) -> None:
        """Close the trackers (W&B finishes its run); the JSONL file needs nothing."""
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []

    def truncate_after(self, step: int) -> None:
        """Drop records newer than ``step``: on resume they belong to work that is redone."""
        for tracker in self.trackers:
            tracker.resume(step)
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def read_jsonl(path: str | Path) -> list[dict]:
    """All complete records of a JSONL file (a torn or garbled line is skipped)."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class ProgressBar:
    """A rich progress bar over training steps, shown on rank 0 unless disabled (``quiet``).

    Everything goes to stderr, keeping stdout for the commands' JSON lines. When it is not a
    terminal (a batch job's log file) an animated bar would show
    nothing until the end, so a plain status line is printed instead, at most every
    ``plain_every_s`` seconds. Disabled bars accept the same calls and do nothing.
    """

    def __init__(self, total: int, completed: int = 0, description: str = "train",
                 enabled: bool = True, plain_every_s: float = 30.0):
        self._progress = self._console = None
        self.total, self.completed, self.description = total, completed, description
        self.plain_every_s, self._last_plain = plain_every_s, -math.inf
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._console = Console(stderr=True)
        if not self._console.is_terminal:
            return
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                                  TextColumn("{task.fields[info]}"), console=self._console)
        self._task = self._progress.add_task(description, total=total, completed=completed, info="")

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, advance: int = 1, info: str | None = None) -> None:
        self.completed += advance
        if self._progress is not None:
            fields: dict[str, Any] = {"advance": advance}
            if info is not None:
                fields["info"] = info
            self._progress.update(self._task, **fields)
        elif self._console is not None and info is not None:
            now = time.monotonic()
            if now - self._last_plain >= self.plain_every_s or self.completed >= self.total:
                self._last_plain = now
                self._console.print(f"{self.description} {self.completed}/{self.total}  {info}",
                                    highlight=False)

    def print(self, message: str) -> None:
        """A line above the bar (e.g. validation results)."""
        if self._console is not None:
            self._console.print(message, highlight=False)


def _save_figure(fig: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))


def plot_training_curves(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Loss (and its parts), learning rate and validation mIoU against step, one PNG."""
    from matplotlib.figure import Figure

    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val" and r.get("miou") is not None]
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_loss, ax_lr, ax_val = fig.subplots(1, 3)
    steps = [r["step"] for r in train]
    loss_keys = sorted({k for r in train for k in r if k == "loss" or k.startswith("loss/")})
    for key in loss_keys:
        pts = [(r["step"], r[key]) for r in train if r.get(key) is not None]
        if pts:
            ax_loss.plot(*zip(*pts), label=key, lw=1.2 if key == "loss" else 0.8)
    ax_loss.set(title="training loss", xlabel="step")
    if loss_keys:
        ax_loss.legend(fontsize=8)
    lrs = [r.get("lr") for r in train]
    if steps and all(v is not None for v in lrs):
        ax_lr.plot(steps, lrs)
    ax_lr.set(title="learning rate", xlabel="step")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if val:
        ax_val.plot([r["step"] for r in val], [100 * r["miou"] for r in val], marker="o")
    ax_val.set(title="validation mIoU (%)", xlabel="step")
    for ax in (ax_loss, ax_lr, ax_val):
        ax.grid(alpha=0.3)
    return _save_figure(fig, path)


def plot_class_iou(iou: Sequence[float | None], path: str | Path,
                   class_names: Sequence[str] | None = None, title: str = "per-class IoU") -> Path:
    """Horizontal bars of IoU per class; classes without data (None/NaN) are marked n/a."""
    from matplotlib.figure import Figure

    names = list(class_names) if class_names is not None else [str(i) for i in range(len(iou))]
    values = [v if v is not None and math.isfinite(v) else None for v in iou]
    fig = Figure(figsize=(7, 0.9 + 0.22 * len(names)), layout="constrained")
    ax = fig.subplots()
    ys = range(len(names))
    ax.barh(ys, [100 * v if v is not None else 0 for v in values], color="tab:blue")
    for y, v in zip(ys, values):
        ax.text(1 if v is None else 100 * v + 1, y, "n/a" if v is None else f"{100 * v:.1f}",
                va="center", fontsize=7)
    finite = [v for v in values if v is not None]
    mean = sum(finite) / len(finite) if finite else float("nan")
    ax.set(yticks=list(ys), yticklabels=names, xlim=(0, 105), xlabel="IoU (%)",
           title=f"{title} (mIoU {100 * mean:.1f})")
    ax.tick_params(axis="y", labelsize=7)
    ax.invert_yaxis()
    return _save_figure(fig, path)
