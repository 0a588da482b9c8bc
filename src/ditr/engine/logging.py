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
from dataclasses import dataclass
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


def format_duration(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``), the form of rich's elapsed / remaining columns."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class _Task:
    """One line of progress: what it counts, how far it is and since when (for the ETA)."""

    description: str
    total: int
    completed: int
    started: float
    start_completed: int
    last_plain: float = -math.inf
    rich_id: Any = None

    def eta(self, now: float) -> str:
        """Remaining time at the rate of this session's steps (a resumed run's earlier steps do not count)."""
        done, left = self.completed - self.start_completed, self.total - self.completed
        if left <= 0:
            return "0:00"
        return format_duration(left * (now - self.started) / done) if done > 0 else "?"


class ProgressBar:
    """Rich progress bars with elapsed time and ETA, shown on rank 0 unless disabled (``quiet``).

    A bar is a task: the constructor's (``total`` steps of training) and any added with
    :meth:`add_task` (the demo's runs going on side by side). Everything goes to stderr, keeping
    stdout for the commands' JSON lines. When it is not a terminal (a batch job's or CI's log file)
    an animated bar would show nothing until the end, so plain lines ``description done/total
    info  [elapsed m:ss, ETA m:ss]`` are printed instead, per task at most every ``plain_every_s``
    seconds (the first and the last step always). Disabled bars accept the same calls and do nothing.
    """

    def __init__(self, total: int | None = None, completed: int = 0, description: str = "train",
                 enabled: bool = True, plain_every_s: float = 30.0):
        self._progress: Any = None
        self._console: Any = None
        self._tasks: list[_Task] = []
        self.plain_every_s = plain_every_s
        if enabled:
            from rich.console import Console

            self._console = Console(stderr=True)
            if self._console.is_terminal:
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                           TimeElapsedColumn, TimeRemainingColumn)

                self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                          MofNCompleteColumn(), TextColumn("elapsed"), TimeElapsedColumn(),
                                          TextColumn("ETA"), TimeRemainingColumn(),
                                          TextColumn("{task.fields[info]}"), console=self._console)
        if total is not None:
            self.add_task(description, total, completed)

    @property
    def enabled(self) -> bool:
        return self._console is not None

    def add_task(self, description: str, total: int, completed: int = 0) -> int:
        """A new bar; returns its id for :meth:`update`."""
        task = _Task(description, total, completed, time.monotonic(), completed)
        if self._progress is not None:
            task.rich_id = self._progress.add_task(description, total=total, completed=completed, info="")
        self._tasks.append(task)
        return len(self._tasks) - 1

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, advance: int = 1, info: str | None = None, task: int = 0,
               completed: int | None = None) -> None:
        """Move a bar by ``advance`` steps (or to ``completed``); ``info`` is shown beside it (off a
        terminal, only calls with ``info`` print a line)."""
        if not self._tasks:
            return
        state = self._tasks[task]
        state.completed = completed if completed is not None else state.completed + advance
        if self._progress is not None:
            fields: dict[str, Any] = {"completed": state.completed}
            if info is not None:
                fields["info"] = info
            self._progress.update(state.rich_id, **fields)
        elif self._console is not None and info is not None:
            now = time.monotonic()
            if now - state.last_plain >= self.plain_every_s or state.completed >= state.total:
                state.last_plain = now
                text = f"{state.description} {state.completed}/{state.total}" + (f"  {info}" if info else "")
                self._console.print(f"{text}  [elapsed {format_duration(now - state.started)}, "
                                    f"ETA {state.eta(now)}]", highlight=False, markup=False, soft_wrap=True)

    def hide(self, task: int) -> None:
        """Take a finished bar off the screen (a long run of many tasks keeps only the live ones)."""
        state = self._tasks[task]
        if self._progress is not None and state.rich_id is not None:
            self._progress.update(state.rich_id, visible=False)

    def print(self, message: str) -> None:
        """A line above the bars (e.g. validation results, a stage header)."""
        if self._console is not None:
            self._console.print(message, highlight=False, soft_wrap=True)  # one log line, however long


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


def plot_class_iou(iou: Mapping[str, float | None] | Sequence[float | None], path: str | Path,
                   class_names: Sequence[str] | None = None, title: str = "per-class IoU") -> Path:
    """Horizontal bars of IoU per class, in percent; classes without data (None/NaN) are marked n/a.

    ``iou`` is a metrics dict's ``"iou"`` (fractions by class name) or a list named by ``class_names``.
    """
    from matplotlib.figure import Figure

    from .metrics import per_class

    by_class = per_class(iou, class_names)
    names = list(by_class)
    values = [v if v is not None and math.isfinite(v) else None for v in by_class.values()]
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
           title=f"{title} (mIoU {100 * mean:.1f}%)")
    ax.tick_params(axis="y", labelsize=7)
    ax.invert_yaxis()
    return _save_figure(fig, path)
