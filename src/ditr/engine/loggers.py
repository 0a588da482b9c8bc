"""Optional experiment trackers fed with the same records as ``metrics.jsonl`` (``trainer.loggers``).

``console`` (the progress bar) and ``jsonl`` (``WORK_DIR/metrics.jsonl``, read by the plots and by
resume) are built in. ``tensorboard`` and ``wandb`` need their packages (the extras
``ditr[tensorboard]`` and ``ditr[wandb]``); a missing one is an error before training starts, on
every rank, so a distributed run stops together. Only rank 0 writes.

Each record is ``{"kind": "train"|"val", "step", "epoch", ...}``; its finite numbers go to the
tracker as ``<kind>/<key>`` at ``step`` (per-class lists and names stay in ``metrics.jsonl``).
W&B runs offline (files under ``WORK_DIR/wandb``, ``wandb sync`` uploads them) unless the user chose
a mode with the ``WANDB_MODE`` environment variable.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import DitrError

#: Every name ``trainer.loggers`` accepts.
LOGGERS = ("console", "jsonl", "tensorboard", "wandb")
DEFAULT_LOGGERS = ("console", "jsonl")
# Module that must import, and the pip extra that provides it.
_REQUIREMENTS = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


class MetricLogger(Protocol):
    """Where training records go besides ``metrics.jsonl``."""

    def log(self, record: Mapping[str, Any]) -> None: ...

    def resume(self, step: int) -> None:
        """Training goes on from ``step``: what was logged after it is logged again."""

    def close(self) -> None: ...


def scalars(record: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
    """The step and the finite numbers of a record, named ``<kind>/<key>``."""
    kind = record.get("kind", "train")
    out = {f"{kind}/{key}": float(value) for key, value in record.items()
           if key not in ("kind", "step", "time") and isinstance(value, numbers.Real)
           and not isinstance(value, bool) and math.isfinite(value)}
    return int(record.get("step", 0)), out


class TensorBoardLogger:
    """Scalars into a TensorBoard event file under ``log_dir`` (``tensorboard --logdir WORK_DIR``)."""

    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self._writer_class = SummaryWriter
        self.writer: Any = None  # opened by the first record or resume: no empty event files

    def log(self, record: Mapping[str, Any]) -> None:
        if self.writer is None:
            self.writer = self._writer_class(log_dir=str(self.log_dir))
        step, values = scalars(record)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()  # a crashed run keeps what it logged

    def resume(self, step: int) -> None:
        """A new event file that tells TensorBoard to drop the earlier files' events after ``step``."""
        self.close()
        self.writer = self._writer_class(log_dir=str(self.log_dir), purge_step=step + 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbLogger:
    """A Weights & Biases run named after the work directory; offline unless ``WANDB_MODE`` says otherwise."""

    def __init__(self, work_dir: Path):
        import wandb

        mode = os.environ.get("WANDB_MODE", "offline")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "ditr"), name=work_dir.name,
                              dir=str(work_dir), mode=mode)

    def log(self, record: Mapping[str, Any]) -> None:
        step, values = scalars(record)
        self.run.log(values, step=step)

    def resume(self, step: int) -> None:
        """Nothing to drop: each start of training is a W&B run of its own."""

    def close(self) -> None:
        self.run.finish()


def check_packages(names: Sequence[str]) -> None:
    """The packages of the optional trackers in ``names`` are installed (the names are checked by
    :class:`~ditr.engine.trainer.TrainerConfig`)."""
    for name in names:
        if name not in _REQUIREMENTS:
            continue
        module, extra = _REQUIREMENTS[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise DitrError(f"trainer.loggers: {name!r} needs the {extra} package: "
                            f"pip install 'ditr[{extra}]'") from None


def build_loggers(names: Sequence[str], work_dir: str | Path, enabled: bool = True) -> list[MetricLogger]:
    """The optional trackers named in ``names`` (none on ranks other than 0: ``enabled`` False)."""
    check_packages(names)
    if not enabled:
        return []
    work_dir = Path(work_dir)
    out: list[MetricLogger] = []
    if "tensorboard" in names:
        out.append(TensorBoardLogger(work_dir / "tensorboard"))
    if "wandb" in names:
        out.append(WandbLogger(work_dir))
    return out
