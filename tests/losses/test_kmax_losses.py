"""Hand-computed golden values for each kMaX loss term on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polymax.losses import (
    average_nonzero,
    gumbel_top_k,
    instance_discrimination_loss,
    mask_id_cross_entropy,
    pq_class_term,
    pq_dice_term,
    semantic_loss,
)
from polymax.losses.matching import MatchResult
from polymax.losses.targets import MaskTargets


def _log_softmax(values: list[float]) -> list[float]:
    top = max(values)
    norm = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - norm for v in values]


def _targets(pixel_mask_id, mask_class, non_void, size=(2, 2), inverse=None) -> MaskTargets:
    ids = torch.tensor([pixel_mask_id])
    area = torch.stack([(ids == g).sum(1) for g in range(len(mask_class))], dim=1).float()
    inverse_area = torch.ones(ids.shape) if inverse is None else torch.tensor([inverse])
    return MaskTargets(pixel_mask_id=ids, non_void=torch.tensor([non_void]), mask_class=torch.tensor([mask_class]),
                       mask_area=area, inverse_mask_area=inverse_area, size=size)


def _match(gt_to_slot, slot_to_gt, matched_dice, matched_class_prob, void_ratio) -> MatchResult:
    return MatchResult(gt_to_slot=torch.tensor([gt_to_slot]), slot_to_gt=torch.tensor([slot_to_gt]),
                       matched_dice=torch.tensor([matched_dice]), matched_class_prob=torch.tensor([matched_class_prob]),
                       mask_void_ratio=torch.tensor([void_ratio]))


def test_average_nonzero_ignores_zeros_and_keeps_the_top_k():
    losses = torch.tensor([[0.0, 2.0, 4.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert average_nonzero(losses).tolist() == [3.0, 0.0]
    assert average_nonzero(losses, top_k_percent=0.25).tolist() == [4.0, 0.0]


def test_pq_class_term_by_hand():
    # K = 4 slots, C = 2 classes + void. Slot 0 ↔ GT 1 (class 1), slot 2 ↔ GT 0 (class 0), slots 1, 3 unmatched.
    logits = [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 100.0]]
    match = _match([2, 0], [1, -1, 0, -1], [0.5, 0.0, 0.8, 0.0], [0.6, 0.7], [0.1, 0.0, 0.2, 0.3])
    loss = pq_class_term(torch.tensor([logits]), match, torch.tensor([[0, 1]]))
    slot0 = -_log_softmax(logits[0])[1] * 0.75 * 0.5  # matched: α · dice
    slot1 = -_log_softmax(logits[1])[2] * 0.25 * 1e-5  # unmatched, void ratio 0 → the 1e-5 floor
    slot2 = -_log_softmax(logits[2])[0] * 0.75 * 0.8
    # slot 3 predicts void with certainty: its loss is exactly 0 and drops out of the normaliser.
    assert loss.item() == pytest.approx((slot0 + slot1 + slot2) / 3, rel=1e-6)


def _mask_case():
    """2×2 pixels, K = 3 slots: GT 0 on pixels 0, 1; GT 1 on pixel 2; pixel 3 crowd (non-void, no mask); GT 2 void."""
    logits = torch.tensor([[[1.0, 2.0, 0.0, 0.5], [0.0, 0.0, 3.0, 0.0], [0.5, -1.0, 0.0, 2.0]]]).reshape(1, 3, 2, 2)
    targets = _targets([0, 0, 1, -1], [4, 2, -1], [True, True, True, True])
    match = _match([0, 1, -1], [0, 1, -1], [0.9, 0.7, 0.0], [0.6, 0.3, 0.0], [0.0, 0.0, 0.0])
    probabilities = torch.softmax(logits.flatten(2), dim=1)[0].tolist()  # [slot][pixel]
    return logits, targets, match, probabilities


def test_pq_dice_term_by_hand():
    logits, targets, match, p = _mask_case()
    # Only pixels 0..2 have a GT mask: the crowd pixel is outside every sum.
    dice_loss_0 = 1 - (2 * (p[0][0] + p[0][1]) + 1) / ((p[0][0] + p[0][1] + p[0][2]) + 2 + 1)
    dice_loss_1 = 1 - (2 * p[1][2] + 1) / ((p[1][0] + p[1][1] + p[1][2]) + 1 + 1)
    expected = (0.6 * dice_loss_0 + 0.3 * dice_loss_1) * 0.75 / 3
    assert pq_dice_term(logits, match, targets).item() == pytest.approx(expected, rel=1e-6)


def test_pq_dice_term_floors_the_class_probability_and_zeroes_a_slotless_mask():
    logits, targets, _, p = _mask_case()
    # GT 1 has no slot (more GT masks than slots): p = 0 and weight max(0, 1e-5).
    match = _match([0, -1, -1], [0, -1, -1], [0.9, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    dice_loss_0 = 1 - (2 * (p[0][0] + p[0][1]) + 1) / ((p[0][0] + p[0][1] + p[0][2]) + 2 + 1)
    dice_loss_1 = 1 - 1 / (0 + 1 + 1)
    expected = 1e-5 * (dice_loss_0 + dice_loss_1) * 0.75 / 3
    assert pq_dice_term(logits, match, targets).item() == pytest.approx(expected, rel=1e-5)


def test_mask_id_cross_entropy_by_hand():
    logits, targets, match, p = _mask_case()
    expected = -(math.log(p[0][0]) + math.log(p[0][1]) + math.log(p[1][2])) / 3  # the crowd pixel drops out
    assert mask_id_cross_entropy(logits, match, targets).item() == pytest.approx(expected, rel=1e-6)


def _reference_instance_discrimination(features: np.ndarray, mask_id: list[int], temperature: float) -> float:
    losses = []
    for i, own in enumerate(mask_id):
        same = [j for j, other in enumerate(mask_id) if own >= 0 and other == own]
        if not same:
            continue  # an all-zero target row
        row = [float(features[i] @ features[j]) / temperature for j in range(len(mask_id))]
        log_p = _log_softmax(row)
        losses.append(-sum(log_p[j] for j in same) / len(same))
    return sum(losses) / len(losses)


def test_instance_discrimination_by_hand():
    angles = [0.0, 0.3, 2.0, 2.5, -1.0]
    features = np.array([[math.cos(a), math.sin(a)] for a in angles], dtype=np.float32)  # unit vectors, D = 2
    mask_id = [0, 0, 1, -1, 1]  # pixel 3 crowd: no target row, still a negative
    targets = _targets(mask_id, [1, 2], [True] * 5, size=(1, 5))
    pixel_features = torch.from_numpy(features.T.copy()).reshape(1, 2, 1, 5)
    loss = instance_discrimination_loss(pixel_features, targets, sample_k=5, sample_temperature=1.5)
    assert loss.item() == pytest.approx(_reference_instance_discrimination(features, mask_id, 0.3), rel=1e-6)


def test_instance_discrimination_samples_only_non_void_pixels_when_there_are_enough():
    mask_id = [0, 0, 1, -1, 1, -1]
    non_void = [True, True, True, False, True, False]  # pixels 3 and 5 are void
    targets = _targets(mask_id, [1, 2], non_void, size=(1, 6), inverse=[3.0, 3.0, 3.0, 6.0, 3.0, 6.0])
    features = torch.nn.functional.normalize(torch.randn(1, 4, 1, 6), dim=1)
    kept = [0, 1, 2, 4]
    reference = _reference_instance_discrimination(features[0, :, 0, kept].T.numpy(), [mask_id[i] for i in kept], 0.3)
    for seed in range(3):  # K = #non-void pixels: any sample is all of them, in some order
        loss = instance_discrimination_loss(features, targets, sample_k=4, sample_temperature=1.5,
                                            generator=torch.Generator().manual_seed(seed))
        assert loss.item() == pytest.approx(reference, rel=1e-5)


def test_gumbel_top_k_is_seeded_and_prefers_large_logits():
    logits = torch.tensor([[0.0, 0.0, -99999.0, 0.0, -99999.0, 5.0]])
    first = gumbel_top_k(logits, 3, torch.Generator().manual_seed(7))
    again = gumbel_top_k(logits, 3, torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    assert len(set(first[0].tolist())) == 3 and not {2, 4} & set(first[0].tolist())
    assert gumbel_top_k(logits, 10).tolist() == [[0, 1, 2, 3, 4, 5]]
    counts = torch.zeros(6)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        counts[gumbel_top_k(logits, 1, generator)[0, 0]] += 1
    assert counts[5] > 150  # e^5 / (e^5 + 3) ≈ 0.98


def test_semantic_loss_by_hand():
    logits = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [3.0, 0.0]]])[None]
    labels = torch.tensor([[0, 9, 1], [9, 9, 9], [2, 9, 255]])[None]  # 3×3 → 2×2 at the even pixels
    weight = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])[None]
    column = lambda y, x: [float(logits[0, c, y, x]) for c in range(3)]
    ce_00 = -_log_softmax(column(0, 0))[0]
    ce_01 = -_log_softmax(column(0, 1))[1] * 2.0
    ce_10 = -_log_softmax(column(1, 0))[2]
    loss = semantic_loss(logits, labels, weight, ignore_label=255)
    assert loss.item() == pytest.approx((ce_00 + ce_01 + ce_10) / 3, rel=1e-6)
    top = semantic_loss(logits, labels, weight, ignore_label=255, top_k_percent=0.5)
    assert top.item() == pytest.approx(sum(sorted([ce_00, ce_01, ce_10])[1:]) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="semantic labels"):
        semantic_loss(logits, torch.full((1, 3, 3), 7), None, ignore_label=255)


def test_semantic_sub_sampling_skips_void_pixels():
    logits = torch.randn(1, 3, 2, 3)
    labels = torch.tensor([[[0, 255, 1], [2, 255, 0]]])
    targets = _targets([0, -1, 1, 2, -1, 0], [0, 1, 2], [True, False, True, True, False, True], size=(2, 3),
                       inverse=[3.0, 6.0, 6.0, 6.0, 6.0, 3.0])
    full = semantic_loss(logits, labels, None, ignore_label=255)
    for seed in range(3):
        sampled = semantic_loss(logits, labels, None, ignore_label=255, sample_k=4, sampling_targets=targets,
                                generator=torch.Generator().manual_seed(seed))
        assert sampled.item() == pytest.approx(full.item(), rel=1e-6)
    two = [semantic_loss(logits, labels, None, ignore_label=255, sample_k=2, sampling_targets=targets,
                         generator=torch.Generator().manual_seed(seed)).item() for seed in range(8)]
    assert len({round(value, 6) for value in two}) > 1  # a genuine sub-sample
