"""Losses: cross-entropy, Lovasz-softmax and their weighted sum (docs/design.md#segmentation-loss); D-DITR's
cosine (docs/design.md#d-ditr-distillation).

The reference trains with cross-entropy + Lovasz-softmax, weight 1 each, ignore index -1. A
criterion in this engine maps ``(output, batch)`` to a dict of named scalar losses whose ``"loss"``
entry is what gets back-propagated; the other entries are logged. That keeps the trainer unaware
of what is being learnt (segmentation here, feature distillation in D-DITR).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import checks
from ..errors import ConfigError

IGNORE_INDEX = -1


def cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None,
                  ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy over the non-ignored points, computed in float32.

    A batch whose points are all ignored gives a zero that still depends on ``logits`` (instead of
    PyTorch's NaN), so one unlabelled crop cannot poison a whole run.
    """
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index,
                           label_smoothing=label_smoothing)


def lovasz_softmax(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX,
                   classes: str = "present") -> Tensor:
    """Multi-class Lovasz-softmax loss (Berman et al. 2018) of (N, C) logits, computed in float32.

    Points labelled ``ignore_index`` are dropped; see :func:`lovasz_softmax_flat`.
    """
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return lovasz_softmax_flat(torch.softmax(logits.float(), dim=1)[valid], target[valid], classes)


def lovasz_softmax_flat(probs: Tensor, labels: Tensor, classes: str = "present") -> Tensor:
    """Lovasz-softmax of (N, C) probabilities against (N,) labels, all valid.

    For every class ``c`` the errors ``|1[y = c] - p_c|`` are sorted in decreasing order and dotted
    with the gradient of the Lovasz extension of the Jaccard loss; the result is the mean over
    classes. ``classes="present"`` averages only over classes that occur in the labels, as the
    reference does; ``"all"`` averages over every class. All classes are sorted at once (one
    column each), so there is no Python loop over points or classes.
    """
    if classes not in ("present", "all"):
        raise ConfigError("loss", "classes", f"must be 'present' or 'all', got {classes!r}")
    fg = F.one_hot(labels.long(), probs.shape[1]).to(probs.dtype)
    if classes == "present":
        present = fg.sum(0) > 0
        fg, probs = fg[:, present], probs[:, present]
    errors = (fg - probs).abs()
    errors_sorted, order = torch.sort(errors, dim=0, descending=True)
    fg_sorted = torch.gather(fg, 0, order)
    return (errors_sorted * _lovasz_grad(fg_sorted)).sum(0).mean()


def _lovasz_grad(fg_sorted: Tensor) -> Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors, per column.

    With ``k`` largest errors marked as mistakes, the Jaccard loss is
    ``1 - (|fg| - fg_in_first_k) / (|fg| + bg_in_first_k)``; the gradient is its increment per
    position. A class without foreground has union ``k`` and loss 1 from the first mistake on.
    """
    total = fg_sorted.sum(0, keepdim=True)
    intersection = total - fg_sorted.cumsum(0)
    union = total + (1.0 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)


#: Largest loss weight: beyond it the loss overflows (a typo, not a recipe).
MAX_WEIGHT = 1e6


@dataclass
class LossConfig:
    """The ``loss`` section of a run configuration: the weights of :class:`SegmentationCriterion`."""

    ce_weight: float = 1.0
    lovasz_weight: float = 1.0
    class_weights: list[float] | None = None
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        checks.number("ce_weight", self.ce_weight, low=0, high=MAX_WEIGHT)
        checks.number("lovasz_weight", self.lovasz_weight, low=0, high=MAX_WEIGHT)
        if self.ce_weight == 0 and self.lovasz_weight == 0:
            raise ConfigError("", "ce_weight", "and lovasz_weight are both 0: the loss would be 0 and nothing learnt")
        if self.class_weights is not None:
            checks.numbers("class_weights", self.class_weights, low=0, high=MAX_WEIGHT)
            if not any(self.class_weights):
                raise ConfigError("", "class_weights", "are all 0: no class would count in the loss")
        checks.number("label_smoothing", self.label_smoothing, low=0, high=1, high_open=True)


class SegmentationCriterion(nn.Module):
    """Weighted sum of cross-entropy and Lovasz-softmax on ``output["logits"]`` vs ``batch["segment"]``.

    Defaults are the reference recipe (1 x CE + 1 x Lovasz, ignore -1). ``class_weights`` is the
    per-class CE weighting used for SemanticKITTI.
    """

    class_weights: Tensor | None  # a buffer (registered in __init__)

    def __init__(self, ce_weight: float = 1.0, lovasz_weight: float = 1.0,
                 class_weights: Sequence[float] | Tensor | None = None,
                 ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0,
                 logits_key: str = "logits", target_key: str = "segment"):
        super().__init__()
        self.ce_weight = ce_weight
        self.lovasz_weight = lovasz_weight
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.logits_key = logits_key
        self.target_key = target_key
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        # A buffer follows the module to the training device; it is configuration, so not saved.
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, output: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        logits, target = output[self.logits_key], batch[self.target_key]
        losses: dict[str, Tensor] = {}
        total = logits.new_zeros((), dtype=torch.float32)
        if self.ce_weight:
            losses["ce"] = cross_entropy(logits, target, self.class_weights, self.ignore_index,
                                         self.label_smoothing)
            total = total + self.ce_weight * losses["ce"]
        if self.lovasz_weight:
            losses["lovasz"] = lovasz_softmax(logits, target, self.ignore_index)
            total = total + self.lovasz_weight * losses["lovasz"]
        return {"loss": total, **losses}


def cosine_distill_loss(pred: Tensor, target: Tensor, seen: Tensor) -> tuple[Tensor, Tensor, int]:
    """(mean of 1 - cos over seen voxels, mean cos, number of seen voxels); unseen voxels are ignored.

    A batch in which no voxel is seen gives a zero loss that still depends on ``pred`` (so DDP and
    the optimizer see a graph) and a NaN cosine.
    """
    seen = seen.to(pred.device).bool()
    count = int(seen.sum())
    if count == 0:
        return pred.sum() * 0.0, torch.tensor(float("nan"), device=pred.device), 0
    cos = F.cosine_similarity(pred[seen].float(), target[seen].to(pred.device).float(), dim=1, eps=1e-8)
    return (1.0 - cos).mean(), cos.mean().detach(), count
