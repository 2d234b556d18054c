"""SemanticMetrics: hand-computed IoUs, a per-pixel counting reference, streaming, ignore handling, checks."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from polymax.metrics import SemanticMetrics


def counting_reference(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int) -> dict[str, float]:
    """Count TP / FP / FN per class with a plain loop over pixels."""
    tp, fp, fn = Counter(), Counter(), Counter()
    correct = total = 0
    for g, p in zip(target.ravel().tolist(), pred.ravel().tolist()):
        if g == ignore:
            continue
        total += 1
        if g == p:
            tp[g] += 1
            correct += 1
        else:
            fn[g] += 1
            if 0 <= p < num_classes:
                fp[p] += 1
    ious = {}
    for c in range(num_classes):
        if tp[c] + fp[c] + fn[c]:
            ious[c] = tp[c] / (tp[c] + fp[c] + fn[c])
    result = {"miou": sum(ious.values()) / len(ious), "pixel_accuracy": correct / total}
    for c in range(num_classes):
        result[f"iou_{c}"] = ious.get(c, math.nan)
    return result


def assert_same(result: dict[str, float], expected: dict[str, float]) -> None:
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(result[key]), key
        else:
            assert result[key] == pytest.approx(value, rel=1e-12), key


def test_hand_computed_iou_with_absent_class_out_of_range_prediction_and_ignore():
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 7, 0]]])
    metric = SemanticMetrics(num_classes=4, ignore_label=255)
    metric.update(pred, target)
    result = metric.compute()
    # Non-ignored (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,7). The 255 pixel is skipped.
    # class 0: TP 1, FP 0, FN 1 → 1/2;  class 1: TP 2, FP 1, FN 0 → 2/3;
    # class 2: TP 0, FN 1, and the invalid prediction 7 is nobody's FP → 0;  class 3 absent → NaN, not averaged.
    assert result["iou_0"] == pytest.approx(1 / 2)
    assert result["iou_1"] == pytest.approx(2 / 3)
    assert result["iou_2"] == 0.0
    assert math.isnan(result["iou_3"])
    assert result["miou"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert result["pixel_accuracy"] == pytest.approx(3 / 5)
    assert metric.confusion_matrix[2, 4] == 1  # the "invalid prediction" column
    assert all(isinstance(v, float) for v in result.values())


def test_random_matches_counting_reference():
    rng = np.random.default_rng(5)
    target = rng.integers(0, 6, size=(3, 11, 13))
    target[rng.random(target.shape) < 0.15] = 255
    pred = np.where(rng.random(target.shape) < 0.5, target, rng.integers(-1, 7, size=target.shape))
    pred[target == 255] = rng.integers(0, 6, size=int((target == 255).sum()))
    metric = SemanticMetrics(num_classes=6)
    metric.update(pred, target)
    assert_same(metric.compute(), counting_reference(pred, target, 6, 255))


def test_perfect_prediction():
    target = torch.randint(0, 5, (2, 8, 9))
    metric = SemanticMetrics(num_classes=5)
    metric.update(target.clone(), target)
    result = metric.compute()
    assert result["miou"] == 1.0 and result["pixel_accuracy"] == 1.0


def test_streaming_equals_single_update():
    target = torch.randint(0, 4, (6, 7, 7))
    target[target == 3] = 255
    pred = torch.randint(0, 4, (6, 7, 7))
    whole = SemanticMetrics(num_classes=4)
    whole.update(pred, target)
    streamed = SemanticMetrics(num_classes=4)
    for start, stop in ((0, 2), (2, 5), (5, 6)):
        streamed.update(pred[start:stop], target[start:stop])
    np.testing.assert_array_equal(streamed.confusion_matrix, whole.confusion_matrix)
    assert_same(streamed.compute(), whole.compute())
    streamed.reset()
    assert streamed.confusion_matrix.sum() == 0


def test_ignore_label_inside_class_range_is_not_evaluated():
    # deeplab2's COCO uses ignore label 0: GT 0 pixels are skipped, predicting 0 is never right.
    target = torch.tensor([[[0, 1, 2, 2]]])
    pred = torch.tensor([[[1, 1, 0, 2]]])
    metric = SemanticMetrics(num_classes=3, ignore_label=0)
    metric.update(pred, target)
    result = metric.compute()
    assert "iou_0" not in result
    assert result["iou_1"] == 1.0 and result["iou_2"] == pytest.approx(1 / 2)
    assert result["pixel_accuracy"] == pytest.approx(2 / 3)


def test_bad_inputs_raise_clear_errors():
    metric = SemanticMetrics(num_classes=3)
    with pytest.raises(ValueError, match=r"\(1, 2, 3\).*\(1, 3, 2\)"):
        metric.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"rank 3.*\(2, 3\)"):
        metric.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        metric.update(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[3\] outside 0..2"):
        metric.update(torch.zeros(1, 1, 2, dtype=torch.long), torch.tensor([[[1, 3]]]))
