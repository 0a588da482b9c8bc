"""Losses: Lovasz-softmax against brute force and against 1 - IoU, ignore index, CE weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ditr.engine.losses import (SegmentationCriterion, cross_entropy, lovasz_softmax,
                                lovasz_softmax_flat)


def jaccard_loss_of_mistakes(mistakes: list[bool], fg: list[bool]) -> float:
    """Delta_J(M) = |M| / |fg u M| for a set of mispredicted points M."""
    m = sum(mistakes)
    union = sum(f or x for f, x in zip(fg, mistakes))
    return m / union if union else 0.0


def brute_force_lovasz(probs: torch.Tensor, labels: torch.Tensor, classes: str) -> float:
    """Lovasz extension by its definition: integrate Delta_J over the thresholds of the errors."""
    per_class = []
    for c in range(probs.shape[1]):
        fg = [bool(y == c) for y in labels]
        if classes == "present" and not any(fg):
            continue
        errors = [abs(float(f) - float(p)) for f, p in zip(fg, probs[:, c])]
        levels = sorted(set(errors), reverse=True) + [0.0]
        value = 0.0
        for hi, lo in zip(levels[:-1], levels[1:]):
            mistakes = [e >= hi for e in errors]
            value += (hi - lo) * jaccard_loss_of_mistakes(mistakes, fg)
        per_class.append(value)
    return sum(per_class) / len(per_class)


@pytest.mark.parametrize("classes", ["present", "all"])
def test_lovasz_matches_brute_force(classes):
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(13, 5, generator=g) * 2, dim=1).double()
    labels = torch.randint(0, 4, (13,), generator=g)  # class 4 never present
    expected = brute_force_lovasz(probs, labels, classes)
    assert float(lovasz_softmax_flat(probs, labels, classes)) == pytest.approx(expected, abs=1e-9)


def test_lovasz_of_hard_predictions_is_one_minus_iou():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (200,), generator=g)
    pred = torch.where(torch.rand(200, generator=g) < 0.3, torch.randint(0, 4, (200,), generator=g),
                       labels)
    probs = F.one_hot(pred, 4).float()
    ious = []
    for c in range(4):
        inter = ((pred == c) & (labels == c)).sum()
        union = ((pred == c) | (labels == c)).sum()
        ious.append(float(inter) / float(union))
    expected = 1 - sum(ious) / 4
    assert float(lovasz_softmax_flat(probs, labels)) == pytest.approx(expected, abs=1e-6)


def test_lovasz_ignore_and_gradient():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(50, 3, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (50,), generator=g)
    target[::4] = -1
    loss = lovasz_softmax(logits, target)
    keep = target != -1
    expected = lovasz_softmax(logits[keep], target[keep]).item()
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[keep].abs().sum() > 0
    assert torch.all(logits.grad[~keep] == 0)


def test_all_ignored_gives_zero_with_graph():
    logits = torch.randn(6, 3, requires_grad=True)
    target = torch.full((6,), -1)
    for loss in (cross_entropy(logits, target), lovasz_softmax(logits, target)):
        assert loss.item() == 0.0
        loss.backward()


def test_cross_entropy_weights_and_combined_criterion():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(40, 3, generator=g)
    target = torch.randint(0, 3, (40,), generator=g)
    target[:5] = -1
    w = torch.tensor([1.0, 2.0, 0.5])
    keep = target != -1
    logp = torch.log_softmax(logits[keep], 1)
    picked = -logp[torch.arange(int(keep.sum())), target[keep]]
    expected = float((w[target[keep]] * picked).sum() / w[target[keep]].sum())
    assert float(cross_entropy(logits, target, w)) == pytest.approx(expected, rel=1e-6)

    crit = SegmentationCriterion(class_weights=[1.0, 2.0, 0.5])
    out = crit({"logits": logits}, {"segment": target})
    assert set(out) == {"loss", "ce", "lovasz"}
    assert float(out["loss"]) == pytest.approx(float(out["ce"] + out["lovasz"]), rel=1e-6)
    assert float(SegmentationCriterion(lovasz_weight=0)({"logits": logits},
                                                         {"segment": target})["loss"]) == \
        pytest.approx(float(cross_entropy(logits, target)), rel=1e-6)
