"""InstanceMetrics: GT instances from panoptic maps, COCO mask AP via pycocotools (skipped when it is absent)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from polymax.errors import UserError
from polymax.metrics import InstanceMetrics, instances_from_panoptic

DIV = 1000


def test_missing_pycocotools_is_a_user_error(monkeypatch):
    for name in ("pycocotools", "pycocotools.mask", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import pycocotools...` raise ImportError
    with pytest.raises(UserError, match="pip install pycocotools"):
        InstanceMetrics(thing_classes=[1])


def test_instances_from_panoptic_matches_a_pixel_loop():
    rng = np.random.default_rng(9)
    panoptic = rng.choice([0, 1001, 1002, 2001, 3000, 255 * DIV], size=(6, 7))
    crowd = rng.random((6, 7)) < 0.3
    instances = instances_from_panoptic(panoptic, thing_classes=[1, 2], label_divisor=DIV, crowd=crowd)
    expected = {}
    for (row, col), segment_id in np.ndenumerate(panoptic):
        class_id = int(segment_id) // DIV
        if class_id not in (1, 2):
            continue
        key = (class_id, True) if crowd[row, col] else (class_id, int(segment_id))
        expected.setdefault(key, set()).add((row, col))
    got = {}
    for class_id, mask, is_crowd in instances:
        key = (class_id, True) if is_crowd else (class_id, int(np.unique(panoptic[mask])[0]))
        assert key not in got
        got[key] = {tuple(int(v) for v in index) for index in np.argwhere(mask)}
    assert got == expected


def box_mask(shape, top, bottom, left, right):
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def test_hand_computed_ap_with_crowd_and_stuff_predictions():
    pytest.importorskip("pycocotools")
    shape = (12, 12)
    target = np.zeros(shape, dtype=np.int64)  # stuff class 0 everywhere else
    target[0:5, 0:5] = 1001  # class 1 instance, 25 px
    target[6:9, 6:9] = 2001  # class 2 instance, 9 px, never predicted
    target[10:12, 0:6] = 1000  # class 1 crowd region
    target[10:12, 8:12] = 255 * DIV  # void
    crowd = np.zeros(shape, dtype=bool)
    crowd[10:12, 0:6] = True
    masks = np.stack([
        box_mask(shape, 0, 5, 0, 4) & ~box_mask(shape, 4, 5, 2, 4),  # 18 px inside the 25-px GT → IoU 0.72
        box_mask(shape, 10, 12, 1, 5),  # class 1 detection on the class-1 crowd → ignored, not FP
        box_mask(shape, 0, 12, 0, 12),  # stuff-class prediction → dropped
    ])
    pred = [{"masks": torch.from_numpy(masks), "labels": torch.tensor([1, 1, 0]),
             "scores": torch.tensor([0.9, 0.95, 0.99])}]
    metric = InstanceMetrics(thing_classes=[1, 2], label_divisor=DIV)
    metric.update(pred, target[None], crowd=crowd[None])
    result = metric.compute()
    # Class 1: IoU 0.72 ≥ thresholds 0.50 … 0.70 (5 of 10) with precision 1 at recall 1 → AP 0.5; AP50 1, AP75 0.
    # Class 2: one GT, no detection → AP 0. Means over the two classes:
    assert result["ap"] == pytest.approx((0.5 + 0) / 2)
    assert result["ap50"] == pytest.approx((1 + 0) / 2)
    assert result["ap75"] == 0.0
    assert result["ap_small"] == pytest.approx(0.25)  # both GTs are small (< 32²)
    assert math.isnan(result["ap_medium"]) and math.isnan(result["ap_large"])
    assert result["ar_100"] == pytest.approx((0.5 + 0) / 2)
    # Without the crowd mask the crowd pixels are an ordinary class-1 instance (1000), which the 0.95 detection
    # (8 of its 12 px, IoU 2/3) matches at thresholds 0.50 … 0.65.
    no_crowd = InstanceMetrics(thing_classes=[1, 2], label_divisor=DIV)
    no_crowd.update(pred, target[None])
    assert no_crowd.compute()["ap50"] == pytest.approx((1 + 0) / 2)
    assert no_crowd.compute()["ap"] != pytest.approx(result["ap"])


def reference_ap(gt_masks_per_image, detections_per_image, max_detections=100):
    """Single-class COCO AP (area 'all'): greedy matching per image, 101-point interpolated precision."""
    thresholds = np.linspace(0.5, 0.95, 10)
    num_gt = sum(len(g) for g in gt_masks_per_image)
    per_threshold = []
    for threshold in thresholds:
        scores, hits = [], []
        for gts, dets in zip(gt_masks_per_image, detections_per_image):
            dets = sorted(dets, key=lambda d: -d[1])[:max_detections]
            used = set()
            for mask, score in dets:
                best, best_iou = None, min(threshold, 1 - 1e-10)
                for index, gt in enumerate(gts):
                    if index in used:
                        continue
                    iou = (mask & gt).sum() / (mask | gt).sum()
                    if iou >= best_iou:
                        best, best_iou = index, iou
                if best is not None:
                    used.add(best)
                scores.append(score)
                hits.append(best is not None)
        order = np.argsort(-np.array(scores), kind="mergesort")
        hits = np.array(hits)[order]
        true_pos, false_pos = np.cumsum(hits), np.cumsum(~hits)
        recall = true_pos / num_gt
        precision = true_pos / (true_pos + false_pos)
        for i in range(len(precision) - 1, 0, -1):
            precision[i - 1] = max(precision[i - 1], precision[i])
        sampled = []
        for recall_level in np.linspace(0, 1, 101):
            reached = np.nonzero(recall >= recall_level)[0]
            sampled.append(precision[reached[0]] if reached.size else 0.0)
        per_threshold.append(np.mean(sampled))
    return float(np.mean(per_threshold))


def test_random_ap_matches_reference_implementation():
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(10)
    shape = (24, 24)
    targets, preds, gt_masks, detections = [], [], [], []
    for _ in range(3):
        target = np.zeros(shape, dtype=np.int64)
        for instance in range(1, 5):
            top, left = rng.integers(0, 18, size=2)
            height, width = rng.integers(3, 7, size=2)
            target[top : top + height, left : left + width] = DIV + instance
        gts = [target == segment_id for segment_id in np.unique(target) if segment_id >= DIV]
        dets = []
        for gt in gts:
            rows, cols = np.nonzero(gt)
            dy, dx = rng.integers(-1, 2, size=2)
            jittered = box_mask(shape, rows.min() + dy, rows.max() + 1, cols.min(), cols.max() + 1 + dx)
            dets.append((jittered, float(rng.random())))
        for _ in range(2):
            top, left = rng.integers(0, 20, size=2)
            dets.append((box_mask(shape, top, top + 4, left, left + 4), float(rng.random())))
        targets.append(target)
        gt_masks.append(gts)
        detections.append(dets)
        preds.append({"masks": np.stack([m for m, _ in dets]), "labels": np.ones(len(dets), dtype=np.int64),
                      "scores": np.array([s for _, s in dets])})
    metric = InstanceMetrics(thing_classes=[1], label_divisor=DIV)
    metric.update(preds[:2], np.stack(targets[:2]))
    metric.update(preds[2:], np.stack(targets[2:]))
    expected = reference_ap(gt_masks, detections)
    assert 0 < expected < 1
    assert metric.compute()["ap"] == pytest.approx(expected, rel=1e-12)


def test_perfect_prediction_and_reset():
    pytest.importorskip("pycocotools")
    target = np.zeros((2, 10, 10), dtype=np.int64)
    target[0, 1:4, 1:4] = 1001
    target[0, 5:9, 2:8] = 1002
    target[1, 0:6, 0:6] = 2005
    metric = InstanceMetrics(thing_classes=[1, 2], label_divisor=DIV)
    pred = []
    for image in target:
        instances = instances_from_panoptic(image, thing_classes=[1, 2], label_divisor=DIV)
        pred.append({"masks": np.stack([m for _, m, _ in instances]),
                     "labels": np.array([c for c, _, _ in instances]), "scores": np.ones(len(instances))})
    metric.update(pred, target)
    result = metric.compute()
    assert result["ap"] == 1.0 and result["ap50"] == 1.0 and result["ar_100"] == 1.0
    metric.reset()
    assert math.isnan(metric.compute()["ap"])


def test_bad_inputs_raise_clear_errors():
    pytest.importorskip("pycocotools")
    metric = InstanceMetrics(thing_classes=[1])
    target = np.zeros((1, 4, 4), dtype=np.int64)
    good = {"masks": np.zeros((1, 4, 4), dtype=bool), "labels": np.array([1]), "scores": np.array([0.5])}
    with pytest.raises(ValueError, match=r"masks \(1, 4, 5\)"):
        metric.update([dict(good, masks=np.zeros((1, 4, 5), dtype=bool))], target)
    with pytest.raises(ValueError, match=r"2 prediction entries.*\(1, 4, 4\)"):
        metric.update([good, good], target)
    with pytest.raises(ValueError, match="missing \\['scores'\\]"):
        metric.update([{"masks": good["masks"], "labels": good["labels"]}], target)
    with pytest.raises(ValueError, match=r"rank 3.*\(4, 4\)"):
        metric.update([good], target[0])
