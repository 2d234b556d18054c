"""deeplab2's Cityscapes recipe: small thing instances weigh more in the auxiliary semantic loss."""

from __future__ import annotations

import torch

from polymax.losses.kmax_criterion import KMaXCriterion
from polymax.losses.semantic import small_instance_weights
from polymax.structures import SegmentationOutput, Targets, TaskRun


def _panoptic() -> torch.Tensor:
    panoptic = torch.zeros(1, 6, 6, dtype=torch.int64)          # class 0 (stuff) everywhere
    panoptic[0, :2, :2] = 1 * 1000 + 1                          # thing class 1, 4 px: small
    panoptic[0, 2:, 2:] = 1 * 1000 + 2                          # thing class 1, 16 px: large
    panoptic[0, 0, 5] = 1 * 1000 + 0                            # crowd (instance 0): never up-weighted
    return panoptic


def test_small_instances_get_the_weight_and_nothing_else_does():
    weights = small_instance_weights(_panoptic(), thing_classes=(1,), label_divisor=1000, max_area=5, weight=3.0)
    assert torch.all(weights[0, :2, :2] == 3.0)
    assert torch.all(weights[0, 2:, 2:] == 1.0)
    assert weights[0, 0, 5] == 1.0 and weights[0, 0, 2] == 1.0
    assert int((weights == 3.0).sum()) == 4


def test_criterion_uses_the_weights_only_when_asked():
    panoptic = _panoptic()
    targets = Targets(semantic=panoptic // 1000, panoptic=panoptic)
    logits = torch.randn(1, 3, 6, 6)  # 2 classes + void
    final = SegmentationOutput(mask_logits=torch.randn(1, 4, 6, 6), pixel_features=torch.randn(1, 8, 6, 6),
                               class_logits=torch.randn(1, 4, 3))
    prediction = TaskRun(task="panoptic", final=final, semantic_logits=logits)
    common = dict(num_classes=2, thing_classes=(1,), max_thing_id=4, inst_disc_k=16)
    plain = KMaXCriterion(**common)(prediction, targets)["semantic_loss"]
    weighted = KMaXCriterion(**common, semantic_small_instance_area=5, semantic_small_instance_weight=3.0)(
        prediction, targets)["semantic_loss"]
    assert not torch.isclose(plain, weighted)
