"""Segmentation metrics from a confusion matrix, and the full-resolution mapping of voxel predictions.

Metrics are always computed from one confusion matrix summed over every batch and every rank: an
average of per-batch or per-rank mIoUs is not the mIoU of the data set. Rows are ground truth,
columns are predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from . import distributed
from .losses import IGNORE_INDEX


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> Tensor:
    """(C, C) int64 counts, ``[gt, pred]``, over points whose target is not ``ignore_index``.

    One ``bincount`` of ``gt * C + pred``. Targets outside ``[0, C)`` other than the ignore index
    are a data bug and raise rather than being silently counted somewhere else.
    """
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.numel()} entries but target has {target.numel()}")
    valid = target != ignore_index
    pred, target = pred[valid], target[valid]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"target ids must be in [0, {num_classes}) or {ignore_index}")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"predicted ids must be in [0, {num_classes})")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def all_reduce_confusion(conf: Tensor) -> Tensor:
    """The confusion matrix summed over all ranks (a copy; unchanged when not distributed)."""
    return distributed.all_reduce_sum(conf.clone())


def segmentation_metrics(conf: Tensor, class_names: Sequence[str] | None = None) -> dict:
    """mIoU, mAcc, allAcc and per-class IoU / accuracy from a confusion matrix.

    Every value is a fraction in [0, 1] (pictures and printed text show percent). Per-class values
    are dicts by class name in class order (``"0"``, ``"1"`` ... without names), so every JSON file
    that holds them (``metrics.jsonl``, ``ditr evaluate --out``, ``ditr predict``'s summary, the
    demo's ``results.json``) reads the same way. A class absent from both ground truth and
    prediction has IoU NaN (and accuracy NaN when absent from the ground truth) and is left out of
    the means, so a validation subset without some classes is not penalised for them. Values are
    plain floats, ready for JSON (NaN -> null is the logger's job).
    """
    conf = conf.double()
    tp = conf.diag()
    gt = conf.sum(1)
    union = gt + conf.sum(0) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan")))
    total = conf.sum()
    if class_names is not None and len(class_names) != conf.shape[0]:
        raise ValueError(f"{len(class_names)} class names for {conf.shape[0]} classes")
    names = list(class_names) if class_names is not None else [str(i) for i in range(conf.shape[0])]
    return {
        "miou": _nanmean(iou),
        "macc": _nanmean(acc),
        "allacc": float(tp.sum() / total) if total > 0 else float("nan"),
        "iou": dict(zip(names, iou.tolist())),
        "acc": dict(zip(names, acc.tolist())),
    }


def per_class(values: Mapping[str, float | None] | Sequence[float | None],
              class_names: Sequence[str] | None = None) -> dict[str, float | None]:
    """Per-class values as a dict by class name, also from the lists that files written before
    ditr stored them by name hold (named by ``class_names`` when given, else by index)."""
    if isinstance(values, Mapping):
        return dict(values)
    names = list(class_names) if class_names and len(class_names) == len(values) else None
    return {(names[i] if names else str(i)): v for i, v in enumerate(values)}


def _nanmean(values: Tensor) -> float:
    finite = values[~values.isnan()]
    return float(finite.mean()) if finite.numel() else float("nan")


@dataclass
class ConfusionMeter:
    """Accumulates a confusion matrix over batches; ``reduced()`` sums it over ranks."""

    num_classes: int
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> Tensor:
        """Add one batch and return its own matrix (useful for per-scene reports)."""
        conf = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        if self.matrix.device != conf.device:
            self.matrix = self.matrix.to(conf.device)
        self.matrix += conf
        return conf

    def reduced(self) -> Tensor:
        return all_reduce_confusion(self.matrix)


def to_full_resolution(pred_voxel: Tensor, inverse: Tensor) -> Tensor:
    """Per-point values from per-voxel values: ``inverse[i]`` is the voxel that point ``i`` fell in.

    Works for labels (N_voxel,) and for logits/probabilities (N_voxel, C) alike.
    """
    return pred_voxel[inverse.long()]
