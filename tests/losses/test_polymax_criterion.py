"""Segmentation criteria of PolyMaX: kMaX losses with the fixed K = C assignment, and per-pixel cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from polymax.losses.kmax_criterion import KMaXCriterion
from polymax.losses.polymax_criterion import (
    PerPixelSemanticCriterion,
    SemanticCriterion,
    pad_targets_to_model_size,
)
from polymax.structures import SegmentationOutput, Targets, TaskRun


def semantic_prediction(num_classes: int, size: int, aux: int = 0) -> TaskRun:
    def one() -> SegmentationOutput:
        return SegmentationOutput(mask_logits=torch.randn(1, num_classes, size, size),
                                  pixel_features=F.normalize(torch.randn(1, 8, size, size), dim=1),
                                  class_logits=torch.randn(1, num_classes, num_classes + 1))
    final = one()
    return TaskRun(task="semantic", final=final, aux=[one() for _ in range(aux)])


def test_semantic_criterion_is_kmax_with_the_fixed_assignment_on_padded_labels():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (1, 9, 13))
    labels[0, 0, :4] = 255
    prediction = semantic_prediction(3, 9, aux=2)
    ours = SemanticCriterion(num_classes=3, inst_disc_k=16)(prediction, Targets(semantic=labels),
                                                            generator=torch.Generator().manual_seed(1))
    padded = F.pad(labels, (0, 20, 0, 24), value=255)  # 9×13 → 33×33, void
    reference = KMaXCriterion(num_classes=3, thing_classes=(), max_thing_id=0, matching="fixed", inst_disc_k=16)(
        prediction, Targets(semantic=padded), generator=torch.Generator().manual_seed(1))
    assert ours.names() == reference.names() and "aux_1pq_style_loss_class_term" in ours
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name])


def test_semantic_criterion_needs_one_cluster_per_class():
    with pytest.raises(ValueError, match="K = C"):
        SemanticCriterion(num_classes=4)(semantic_prediction(3, 9), Targets(semantic=torch.zeros(1, 33, 33).long()))


def test_padding_helper_marks_the_padding_void():
    targets = Targets(semantic=torch.zeros(1, 5, 6, dtype=torch.long), panoptic=torch.full((1, 5, 6), 1002),
                      semantic_weight=torch.ones(1, 5, 6), depth=torch.ones(1, 5, 6))
    padded = pad_targets_to_model_size(targets, ignore_label=255, label_divisor=1000)
    assert padded.semantic.shape == (1, 33, 33)
    assert (padded.semantic[0, 5:] == 255).all() and (padded.semantic[0, :, 6:] == 255).all()
    assert (padded.semantic[0, :5, :6] == 0).all()
    assert (padded.panoptic[0, 5:] == 255_000).all() and (padded.semantic_weight[0, :, 6:] == 0).all()
    assert padded.depth is targets.depth


def test_per_pixel_cross_entropy_golden_value_and_padding_is_ignored():
    labels = torch.randint(0, 4, (2, 9, 13))
    logits = torch.zeros(2, 4, 9, 9)
    blank = torch.zeros(2, 1, 9, 9)
    criterion = PerPixelSemanticCriterion(num_classes=4)
    run = lambda: TaskRun(task="semantic", final=SegmentationOutput(mask_logits=logits, pixel_features=blank))
    value = criterion(run(), Targets(semantic=labels))
    assert value.names() == ["per_pixel_cross_entropy_loss"]
    assert float(value.total) == pytest.approx(math.log(4), rel=1e-6)  # uniform logits
    # Input pixels map to prediction rows 0..2 and columns 0..3; what the model says on the padding is free.
    logits[:, :, 3:] = torch.randn(2, 4, 6, 9)
    logits[:, :, :, 4:] = torch.randn(2, 4, 9, 5)
    again = criterion(run(), Targets(semantic=labels))
    assert float(again.total) == pytest.approx(math.log(4), rel=1e-6)
