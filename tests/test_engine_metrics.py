"""Confusion matrix, mIoU / mAcc / allAcc with absent classes, full-resolution mapping."""

from __future__ import annotations

import math

import pytest
import torch

from ditr.engine.metrics import (ConfusionMeter, confusion_matrix, per_class,
                                 segmentation_metrics, to_full_resolution)


def test_known_confusion_matrix_and_metrics():
    target = torch.tensor([0, 0, 0, 1, 1, 2, -1, -1, 2, 0])
    pred = torch.tensor([0, 0, 1, 1, 0, 2, 3, 2, 1, 0])
    conf = confusion_matrix(pred, target, num_classes=4)
    expected = torch.tensor([[3, 1, 0, 0],
                             [1, 1, 0, 0],
                             [0, 1, 1, 0],
                             [0, 0, 0, 0]])
    assert torch.equal(conf, expected)
    m = segmentation_metrics(conf, ["a", "b", "c", "d"])
    iou = [3 / 5, 1 / 4, 1 / 2]  # class 3: absent from GT and prediction -> NaN
    assert list(m["iou"]) == list(m["acc"]) == ["a", "b", "c", "d"]  # by class name, in class order
    assert list(m["iou"].values())[:3] == pytest.approx(iou) and math.isnan(m["iou"]["d"])
    assert m["miou"] == pytest.approx(sum(iou) / 3)
    assert m["macc"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)
    assert m["allacc"] == pytest.approx(5 / 8)
    assert set(m) == {"miou", "macc", "allacc", "iou", "acc"}
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        segmentation_metrics(conf, ["a", "b", "c"])


def test_predicted_but_absent_class_counts_as_zero():
    conf = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), num_classes=2)
    m = segmentation_metrics(conf)
    assert m["iou"] == pytest.approx({"0": 0.5, "1": 0.0})  # no class names: named by index
    assert m["miou"] == pytest.approx(0.25)
    assert math.isnan(m["acc"]["1"])


def test_per_class_reads_lists_of_older_files():
    assert per_class([0.5, None], ["wall", "floor"]) == {"wall": 0.5, "floor": None}
    assert per_class([0.5, None]) == per_class([0.5, None], ["too", "many", "names"]) == {"0": 0.5, "1": None}
    assert per_class({"wall": 0.5}) == {"wall": 0.5}


def test_invalid_ids_raise_and_meter_accumulates():
    with pytest.raises(ValueError, match="target ids"):
        confusion_matrix(torch.tensor([0]), torch.tensor([5]), num_classes=3)
    with pytest.raises(ValueError, match="predicted ids"):
        confusion_matrix(torch.tensor([-2]), torch.tensor([0]), num_classes=3)
    meter = ConfusionMeter(3)
    meter.update(torch.tensor([0, 1]), torch.tensor([0, 2]))
    meter.update(torch.tensor([2]), torch.tensor([2]))
    assert int(meter.matrix.sum()) == 3 and int(meter.reduced().trace()) == 2


def test_full_resolution():
    inverse = torch.tensor([0, 0, 1, 2, 2, 1])
    assert to_full_resolution(torch.tensor([7, 8, 9]), inverse).tolist() == [7, 7, 8, 9, 9, 8]
    logits = torch.randn(3, 4)
    assert torch.equal(to_full_resolution(logits, inverse), logits[inverse])

