"""``state()`` / ``merge()`` of the streaming metrics (sharded evaluation): the images split into two shares,
each share scored by its own instance, one instance's state merged into the other's (or both into a fresh one)
gives the metrics of one instance that saw every image. Counts are compared exactly; float sums (float64)
differ from the one-instance sum only by the order of the additions."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from polymax.metrics import DepthMetrics, InstanceMetrics, NormalMetrics, PanopticMetrics, SemanticMetrics


def _split_and_merge(make, updates):
    """(one instance fed every update, a fresh instance with the two halves' states merged in order)."""
    whole = make()
    for update in updates:
        update(whole)
    halves = [make(), make()]
    for index, update in enumerate(updates):
        update(halves[index * 2 // len(updates)])
    merged = make()
    for half in halves:
        merged.merge(pickle.loads(pickle.dumps(half.state())))   # a state travels pickled between processes
    return whole, merged


def test_semantic_confusion_matrices_add():
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 5, (1, 6, 7), generator=generator),
                torch.randint(0, 5, (1, 6, 7), generator=generator)) for _ in range(4)]
    batches[1][1][0, 0, :3] = 255                                    # ignored pixels
    whole, merged = _split_and_merge(lambda: SemanticMetrics(num_classes=5),
                                     [lambda m, b=b: m.update(*b) for b in batches])
    assert np.array_equal(merged.confusion_matrix, whole.confusion_matrix)
    assert merged.compute() == whole.compute()
    with pytest.raises(ValueError, match="classes"):
        SemanticMetrics(num_classes=4).merge(whole.state())


def test_panoptic_tallies_add():
    # Hand-made: image A has one matched thing (IoU 3/4) and one missed stuff segment; image B one false positive.
    pred_a = np.array([[[1001, 1001, 1001, 1001], [0, 0, 0, 0]]])
    gt_a = np.array([[[1001, 1001, 1001, 0], [2000, 2000, 2000, 2000]]])
    pred_b = np.array([[[2000, 2000], [2000, 2000]]])
    gt_b = np.array([[[255000, 255000], [255000, 1001]]])
    updates = [lambda m: m.update(pred_a, gt_a), lambda m: m.update(pred_b, gt_b)]
    whole, merged = _split_and_merge(lambda: PanopticMetrics(num_classes=3, thing_classes=[1]), updates)
    state = merged.state()
    assert state["true_positives"].tolist() == [0, 1, 0]
    assert state["iou_sum"].tolist() == pytest.approx([0.0, 0.75, 0.0])
    for key in ("true_positives", "false_positives", "false_negatives"):
        assert np.array_equal(state[key], whole.state()[key])
    assert merged.compute() == pytest.approx(whole.compute(), nan_ok=True)


def test_depth_sums_and_counts_add():
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.rand(2, 5, 6, generator=generator) * 9 + 0.5, torch.rand(2, 5, 6, generator=generator) * 9)
               for _ in range(3)]
    batches[2][1][1] = 0.0                                            # an image without a valid pixel
    whole, merged = _split_and_merge(lambda: DepthMetrics(), [lambda m, b=b: m.update(*b) for b in batches])
    assert (merged.num_images, merged.num_skipped_images) == (whole.num_images, whole.num_skipped_images) == (5, 1)
    assert merged.compute() == pytest.approx(whole.compute(), rel=1e-12)


@pytest.mark.parametrize("exact_median", [True, False])
def test_normal_counts_angles_and_histograms_add(exact_median):
    generator = torch.Generator().manual_seed(2)
    batches = [(torch.randn(1, 3, 4, 5, generator=generator), torch.randn(1, 3, 4, 5, generator=generator))
               for _ in range(3)]
    whole, merged = _split_and_merge(lambda: NormalMetrics(exact_median=exact_median),
                                     [lambda m, b=b: m.update(*b) for b in batches])
    assert merged.num_pixels == whole.num_pixels == 60
    assert merged.compute() == pytest.approx(whole.compute(), rel=1e-12)
    assert merged.compute()["median"] == whole.compute()["median"]     # the same angles / the same histogram
    with pytest.raises(ValueError, match="median"):
        NormalMetrics(exact_median=not exact_median).merge(whole.state())


def test_instance_images_and_ids_continue():
    rng = np.random.default_rng(3)
    updates = []
    for _ in range(4):
        target = np.zeros((1, 8, 8), dtype=np.int64)
        target[0, :4, :4], target[0, 4:, 2:6] = 1001, 1002
        masks = rng.random((3, 8, 8)) > 0.4
        masks[0] = target[0] == 1001
        prediction = {"masks": masks, "labels": np.array([1, 1, 0]), "scores": rng.random(3)}
        updates.append(lambda m, p=prediction, t=target: m.update([p], t))
    whole, merged = _split_and_merge(lambda: InstanceMetrics(thing_classes=[1]), updates)
    assert merged.state() == whole.state()            # the same images, instances, detections and ids
    assert merged.compute() == pytest.approx(whole.compute(), nan_ok=True)
