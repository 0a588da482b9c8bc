"""Evaluation over a whole data set, sharded over ranks, metrics from the summed confusion matrix.

Usable on its own (``ditr evaluate`` with a checkpoint) and by the trainer between epochs. Each
rank evaluates its own share of the data, every sample exactly once (no padding: a repeated
sample would be counted twice), and confusion matrix and losses are summed over ranks before any
metric is computed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError
from . import distributed
from .checkpoint import preserved_rng
from .loading import SeededDataset, eval_keys, ignore_stop_signals, move_to
from .losses import IGNORE_INDEX
from .metrics import ConfusionMeter, segmentation_metrics, to_full_resolution

StepFn = Callable[[Any], Mapping[str, Any]]


@dataclass
class EvalResult:
    """Metrics over all ranks' data and the all-reduced (C, C) confusion matrix ``[gt, pred]``."""

    metrics: dict[str, Any]
    confusion: Tensor


def as_output(output: Tensor | Mapping[str, Any]) -> Mapping[str, Any]:
    """A model's output as a dict: a bare tensor is taken as the logits (as ``PTv3Segmentor``)."""
    return {"logits": output} if isinstance(output, Tensor) else output


def amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` ("fp16" / "bf16" / None); mixed precision is CUDA-only."""
    if amp not in (None, "fp16", "bf16"):
        raise ConfigError("trainer", "amp", f"must be None, 'fp16' or 'bf16', got {amp!r}")
    if amp is None or device.type != "cuda":
        return None
    return torch.float16 if amp == "fp16" else torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class Evaluator:
    """Runs ``model`` over a data set and reports segmentation metrics (and mean losses).

    ``model`` may be DDP-wrapped; the bare module is used, since ranks may see different numbers
    of batches and DDP's forward would wait for the others. ``criterion`` is optional (losses are
    then not reported). ``num_classes`` may be None for tasks without class predictions
    (distillation), whose step functions return only losses.
    """

    def __init__(self, model: nn.Module, num_classes: int | None, *,
                 criterion: Callable[..., Mapping[str, Tensor]] | None = None,
                 ignore_index: int = IGNORE_INDEX, class_names: list[str] | None = None,
                 batch_size: int = 1, num_workers: int = 0, amp: str | None = None,
                 seed: int = 0, device: torch.device | None = None):
        self.model = distributed.unwrap(model)
        self.num_classes, self.criterion = num_classes, criterion
        self.ignore_index, self.class_names = ignore_index, class_names
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.device = device or next(self.model.parameters()).device
        self.amp_dtype = amp_dtype(amp, self.device)

    def step(self, batch: Any) -> dict[str, Any]:
        """Predictions, targets and losses of one batch, at full resolution when it can be.

        ``{"pred", "target", "losses"}``: arg-max of ``output["logits"]`` against
        ``batch["segment"]``, or, when the batch carries ``"inverse"`` (point -> voxel) and
        ``"origin_segment"``, the voxel predictions mapped back to every original point.
        """
        output = as_output(self.model(batch))
        losses = self.criterion(output, batch) if self.criterion is not None else {}
        pred, target = output["logits"].argmax(1), batch["segment"]
        if "inverse" in batch and "origin_segment" in batch:
            pred, target = to_full_resolution(pred, batch["inverse"]), batch["origin_segment"]
        return {"pred": pred, "target": target, "losses": losses}

    def run(self, dataset: Dataset, collate_fn: Callable[[list], Any],
            step_fn: StepFn | None = None) -> EvalResult:
        """Evaluate ``dataset``; ``step_fn(batch)`` replaces :meth:`step` (it may omit "pred").

        Random generators are left as they were, so evaluating between epochs does not change
        the training that follows.
        """
        step_fn = step_fn or self.step
        rank, world = distributed.get_rank(), distributed.get_world_size()
        loader = DataLoader(SeededDataset(dataset), batch_size=self.batch_size,
                            sampler=eval_keys(len(dataset), rank, world, self.seed),  # type: ignore[arg-type]
                            collate_fn=collate_fn, num_workers=self.num_workers,
                            pin_memory=self.device.type == "cuda",
                            worker_init_fn=ignore_stop_signals if self.num_workers else None)
        meter = ConfusionMeter(self.num_classes, self.ignore_index) if self.num_classes else None
        loss_sums: dict[str, float] = {}
        batches = 0
        was_training = self.model.training
        self.model.eval()
        try:
            with preserved_rng(), torch.inference_mode():
                for batch in loader:
                    batch = move_to(batch, self.device)
                    with autocast(self.device, self.amp_dtype):
                        out = step_fn(batch)
                    if out.get("pred") is not None:
                        if meter is None:
                            raise ValueError("num_classes is needed to score predictions")
                        meter.update(out["pred"], out["target"])
                    for name, value in out.get("losses", {}).items():
                        loss_sums[name] = loss_sums.get(name, 0.0) + float(value)
                    batches += 1
        finally:
            self.model.train(was_training)
        return self._reduce(meter, loss_sums, batches)

    def _reduce(self, meter: ConfusionMeter | None, loss_sums: dict[str, float], batches: int
                ) -> EvalResult:
        conf = meter.reduced().cpu() if meter is not None else torch.zeros(0, 0, dtype=torch.int64)
        # Loss names must agree over ranks; a rank without batches has none, so share rank 0's.
        names = distributed.broadcast_object(sorted(loss_sums))
        totals = torch.tensor([loss_sums.get(n, 0.0) for n in names] + [batches],
                              dtype=torch.float64, device=self.device)
        sums: list[float] = distributed.all_reduce_sum(totals).tolist()
        metrics: dict[str, Any] = {}
        if conf.sum() > 0:
            metrics.update(segmentation_metrics(conf, self.class_names))
        if sums[-1] > 0:
            metrics.update({f"val_{n}": v / sums[-1] for n, v in zip(names, sums)})
        return EvalResult(metrics=metrics, confusion=conf)
