"""PanopticMetrics: hand-computed PQ, a dictionary-based reference of the official algorithm, void / crowd."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from polymax.metrics import PanopticMetrics

KEYS = ("pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff", "sq_stuff", "rq_stuff")
DIV = 1000
VOID = 255 * DIV


def dictionary_reference(pred, target, crowd, num_classes, things, ignore=255, divisor=DIV):
    """The official COCO panoptic evaluation written with per-image dictionaries of segments."""
    stats = defaultdict(lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
    for image in range(target.shape[0]):
        gt_area, pred_area, overlap = defaultdict(int), defaultdict(int), defaultdict(int)
        for g, p, c in zip(target[image].ravel().tolist(), pred[image].ravel().tolist(),
                           crowd[image].ravel().tolist()):
            if g // divisor == ignore:
                g_key = "void"
            elif c:
                g_key = ("crowd", g // divisor)
            else:
                g_key = g
                gt_area[g] += 1
            p_key = None if p // divisor == ignore else p
            if p_key is not None:
                pred_area[p] += 1
            overlap[(g_key, p_key)] += 1
        gt_matched, pred_matched = set(), set()
        for (g, p), inter in overlap.items():
            if g not in gt_area or p is None or g // divisor != p // divisor:
                continue
            iou = inter / (pred_area[p] + gt_area[g] - inter - overlap.get(("void", p), 0))
            if iou > 0.5:
                stats[g // divisor]["tp"] += 1
                stats[g // divisor]["iou"] += iou
                gt_matched.add(g)
                pred_matched.add(p)
        for g in gt_area:
            if g not in gt_matched:
                stats[g // divisor]["fn"] += 1
        for p, area in pred_area.items():
            if p in pred_matched:
                continue
            ignored = overlap.get(("void", p), 0) + overlap.get((("crowd", p // divisor), p), 0)
            if ignored / area <= 0.5:
                stats[p // divisor]["fp"] += 1
    groups = {"": range(num_classes), "_things": things, "_stuff": [c for c in range(num_classes) if c not in things]}
    result = {}
    for suffix, classes in groups.items():
        pq, sq, rq = [], [], []
        for c in classes:
            s = stats[c]
            if s["tp"] + s["fp"] + s["fn"] == 0:
                continue
            denominator = s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"]
            pq.append(s["iou"] / denominator)
            sq.append(s["iou"] / s["tp"] if s["tp"] else 0.0)
            rq.append(s["tp"] / denominator)
        for name, values in (("pq", pq), ("sq", sq), ("rq", rq)):
            result[name + suffix] = sum(values) / len(values) if values else math.nan
    return result


def assert_same(result, expected):
    for key in KEYS:
        if math.isnan(expected[key]):
            assert math.isnan(result[key]), key
        else:
            assert result[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key


def test_hand_computed_matching_void_and_strict_threshold():
    # Classes: 0, 3 stuff (3 never appears), 1 and 2 things. One row of 20 pixels.
    gt = [0] * 10 + [1001] * 4 + [VOID] * 2 + [1002] * 4
    pred = [0] * 8 + [1005] * 2 + [1001] * 6 + [1002] * 2 + [2001] * 2
    metric = PanopticMetrics(num_classes=4, thing_classes=[1, 2])
    metric.update(torch.tensor([[pred]]), torch.tensor([[gt]]))
    result = metric.compute()
    # stuff 0: ∩ 8, union 8 + 10 − 8 = 10 → IoU 0.8 (TP).
    # gt 1001 / pred 1001: ∩ 4, pred area 6 of which 2 on void → union 6 + 4 − 4 − 2 = 4 → IoU 1 (TP).
    # gt 1002 / pred 1002: ∩ 2, union 2 + 4 − 2 = 4 → IoU 0.5, not > 0.5: FN for 1002, FP for pred 1002.
    # pred 1005 (class 1) and pred 2001 (class 2) match nothing: FP.
    # class 0: PQ 0.8, SQ 0.8, RQ 1;  class 1: TP 1, FP 2, FN 1 → PQ 1/2.5, SQ 1, RQ 1/2.5;  class 2: 0, 0, 0.
    expected = {
        "pq": (0.8 + 0.4 + 0) / 3, "sq": (0.8 + 1 + 0) / 3, "rq": (1 + 0.4 + 0) / 3,
        "pq_things": 0.4 / 2, "sq_things": 1 / 2, "rq_things": 0.4 / 2,
        "pq_stuff": 0.8, "sq_stuff": 0.8, "rq_stuff": 1.0,
    }
    assert_same(result, expected)
    per_class = metric.per_class()
    assert per_class["tp"].tolist() == [1, 1, 0, 0] and per_class["fp"].tolist() == [0, 2, 1, 0]
    assert per_class["fn"].tolist() == [0, 1, 0, 0] and math.isnan(per_class["pq"][3])


def test_predictions_mostly_on_void_are_not_false_positives():
    gt = [VOID] * 4 + [0] * 6
    pred = [1007] * 3 + [1008] * 2 + [0] * 5
    metric = PanopticMetrics(num_classes=2, thing_classes=[1])
    metric.update(np.array([[pred]]), np.array([[gt]]))
    # pred 1007: 3/3 on void → ignored.  pred 1008: 1/2 on void, not > 0.5 → FP for class 1.
    # stuff 0: ∩ 5, union 5 + 6 − 5 = 6 → IoU 5/6.
    result = metric.compute()
    assert result["pq"] == pytest.approx((5 / 6 + 0) / 2)
    assert result["pq_stuff"] == pytest.approx(5 / 6) and result["pq_things"] == 0.0


@pytest.mark.parametrize(("exclude_crowd", "class1_iou"), [(False, 4 / 6), (True, 1.0)])
def test_crowd_regions(exclude_crowd, class1_iou):
    gt = [1000] * 6 + [1001] * 4
    crowd = [True] * 6 + [False] * 4
    pred = [1003] * 2 + [2003] * 2 + [1004] * 6
    metric = PanopticMetrics(num_classes=3, thing_classes=[1, 2], exclude_crowd_from_union=exclude_crowd)
    metric.update(np.array([[pred]]), np.array([[gt]]), crowd=np.array([[crowd]]))
    # Crowd GT is no segment (no FN). pred 1003 lies on class-1 crowd → ignored; pred 2003 lies on the crowd of
    # another class → FP for class 2. pred 1004 vs gt 1001: ∩ 4, union 6 + 4 − 4 = 6 (official) or
    # 6 + 4 − 4 − 2 crowd pixels = 4 (exclude_crowd_from_union).
    per_class = metric.per_class()
    assert per_class["tp"].tolist() == [0, 1, 0] and per_class["fp"].tolist() == [0, 0, 1]
    assert per_class["fn"].tolist() == [0, 0, 0]
    assert metric.compute()["pq"] == pytest.approx((class1_iou + 0) / 2)


def test_ignore_label_zero_like_deeplab2_coco():
    # COCO in deeplab2: ignore label 0 (ids 0..999 are void), classes 1..C−1.
    gt = [0] * 2 + [1000] * 4 + [2001] * 4
    pred = [2001] * 2 + [1000] * 4 + [2001] * 4
    metric = PanopticMetrics(num_classes=3, thing_classes=[2], ignore_label=0)
    metric.update(torch.tensor([[pred]]), torch.tensor([[gt]]))
    # 2001: ∩ 4, union 6 + 4 − 4 − 2 void = 4 → IoU 1. Stuff 1: IoU 1.
    assert metric.compute()["pq"] == 1.0


def random_scene(rng, batch, num_classes, things):
    """Block-structured GT (2×2 cells) with void and crowd, and a noisy copy as prediction."""
    cell_class = rng.integers(0, num_classes, size=(batch, 5, 6))
    cell_instance = np.where(np.isin(cell_class, things), rng.integers(1, 3, size=cell_class.shape), 0)
    cell_ids = cell_class * DIV + cell_instance
    cell_ids[rng.random(cell_ids.shape) < 0.1] = VOID
    gt = cell_ids.repeat(2, axis=1).repeat(2, axis=2)
    crowd = (rng.random((batch, 5, 6)) < 0.15).repeat(2, axis=1).repeat(2, axis=2)
    pred = gt.copy()
    noise = rng.random(gt.shape) < 0.3
    noise_class = rng.integers(0, num_classes, size=gt.shape)
    pred[noise] = (noise_class * DIV + rng.integers(0, 3, size=gt.shape))[noise]
    pred[rng.random(gt.shape) < 0.05] = VOID
    return pred, gt, crowd


def test_random_matches_dictionary_reference():
    rng = np.random.default_rng(6)
    things = [2, 3, 4]
    pred, gt, crowd = random_scene(rng, 4, 6, things)
    metric = PanopticMetrics(num_classes=6, thing_classes=things)
    metric.update(pred, gt, crowd=crowd)
    result = metric.compute()
    assert_same(result, dictionary_reference(pred, gt, crowd, 6, things))
    assert 0 < result["pq"] < 1  # the scene really mixes matches and errors


def test_perfect_prediction():
    rng = np.random.default_rng(7)
    _, gt, _ = random_scene(rng, 2, 5, [3, 4])
    metric = PanopticMetrics(num_classes=5, thing_classes=[3, 4])
    metric.update(gt.copy(), gt)
    assert_same(metric.compute(), dict.fromkeys(KEYS, 1.0))


def test_streaming_equals_single_update():
    rng = np.random.default_rng(8)
    pred, gt, crowd = random_scene(rng, 5, 5, [1, 2])
    whole = PanopticMetrics(num_classes=5, thing_classes=[1, 2])
    whole.update(pred, gt, crowd=crowd)
    streamed = PanopticMetrics(num_classes=5, thing_classes=[1, 2])
    for start, stop in ((0, 2), (2, 3), (3, 5)):
        streamed.update(torch.from_numpy(pred[start:stop]), torch.from_numpy(gt[start:stop]),
                        crowd=torch.from_numpy(crowd[start:stop]))
    assert_same(streamed.compute(), whole.compute())
    streamed.reset()
    assert math.isnan(streamed.compute()["pq"])


def test_bad_inputs_raise_clear_errors():
    metric = PanopticMetrics(num_classes=3, thing_classes=[1])
    ids = np.zeros((1, 2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match=r"\(1, 2, 3\).*\(1, 3, 2\)"):
        metric.update(ids, np.zeros((1, 3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"rank 3.*\(2, 3\)"):
        metric.update(ids[0], ids[0])
    with pytest.raises(ValueError, match="integer"):
        metric.update(ids.astype(np.float32), ids)
    with pytest.raises(ValueError, match=r"classes \[7\]"):
        metric.update(ids + 7 * DIV, ids)
    with pytest.raises(ValueError, match=r"crowd mask shape \(1, 2, 2\)"):
        metric.update(ids, ids, crowd=np.zeros((1, 2, 2), dtype=bool))
    with pytest.raises(ValueError, match="thing class 5"):
        PanopticMetrics(num_classes=3, thing_classes=[5])
