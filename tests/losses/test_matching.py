"""Hungarian and fixed matching between mask slots and ground-truth masks."""

from __future__ import annotations

import math

import pytest
import torch

from polymax.losses.matching import (
    class_similarity,
    fixed_match,
    hungarian_match,
    mask_dice_similarity,
    solve_assignment,
)
from polymax.losses.targets import MaskTargets, prepare_mask_targets
from polymax.structures import Targets


def _targets(pixel_mask_id: list[int], mask_class: list[int], non_void: list[bool], size: tuple[int, int]):
    ids = torch.tensor([pixel_mask_id])
    classes = torch.tensor([mask_class])
    area = torch.stack([(ids == g).sum(1) for g in range(len(mask_class))], dim=1).float()
    return MaskTargets(pixel_mask_id=ids, non_void=torch.tensor([non_void]), mask_class=classes, mask_area=area,
                       inverse_mask_area=torch.ones(ids.shape), size=size)


def test_solver_finds_the_optimum_a_greedy_choice_misses():
    # Greedy takes (0, 0) = -0.9 and ends at -1.0; the optimum is rows → columns [1, 0, 2] = -1.75.
    cost = torch.tensor([[[-0.9, -0.8, 0.0], [-0.85, 0.0, 0.0], [0.0, 0.0, -0.1]]])
    assert solve_assignment(cost).tolist() == [[1, 0, 2]]


def test_solver_on_rectangular_matrices():
    # 2 GT rows, 4 slots: (0→3, 1→1) = -1.4 beats the row-wise best (0→1, 1→2) = -1.2.
    wide = torch.tensor([[[0.0, -1.0, 0.0, -0.5], [0.0, -0.9, -0.2, 0.0]]])
    assert solve_assignment(wide).tolist() == [[3, 1]]
    tall = wide.transpose(1, 2)  # 4 rows, 2 columns: two rows stay unassigned
    assert solve_assignment(tall).tolist() == [[-1, 1, -1, 0]]


def test_permuting_the_rows_permutes_the_assignment():
    generator = torch.Generator().manual_seed(3)
    cost = torch.rand(1, 5, 7, generator=generator)
    assignment = solve_assignment(cost)[0]
    permutation = torch.randperm(5, generator=generator)
    assert torch.equal(solve_assignment(cost[:, permutation])[0], assignment[permutation])


def test_mask_dice_similarity_by_hand():
    targets = _targets([0, 0, 1, -1], [3, 5], [True, True, True, False], (2, 2))
    probabilities = torch.tensor([[[0.9, 0.8, 0.1, 0.2], [0.1, 0.2, 0.9, 0.8]]])
    dice = mask_dice_similarity(probabilities, targets)[0]
    # dice(g, k) = Σ g·m / ((|g| + Σ m) / 2 + 1e-5); Σ m0 = 2.0, Σ m1 = 2.0, |g0| = 2, |g1| = 1.
    expected = [[1.7 / (2.0 + 1e-5), 0.3 / (2.0 + 1e-5)], [0.1 / (1.5 + 1e-5), 0.9 / (1.5 + 1e-5)]]
    assert torch.allclose(dice, torch.tensor(expected), atol=1e-7)


def test_class_similarity_drops_void_without_renormalising():
    logits = torch.tensor([[[0.0, 0.0, math.log(2.0)], [math.log(3.0), 0.0, 0.0]]])  # K = 2, C = 2 + void
    similarity = class_similarity(logits, torch.tensor([[0, 1, -1]]))[0]
    expected = [[0.25, 0.6], [0.25, 0.2], [0.0, 0.0]]  # rows: GT masks (the last one void)
    assert torch.allclose(similarity, torch.tensor(expected), atol=1e-7)


def test_hungarian_match_end_to_end():
    # 2×2 pixels: mask 0 (class 1) on the left column, mask 1 (class 0) top right, bottom right void.
    targets = _targets([0, 1, 0, -1], [1, 0, -1], [True, True, True, False], (2, 2))
    big = 8.0
    mask_logits = torch.zeros(1, 3, 2, 2)
    mask_logits[0, 2, :, 0] = big  # slot 2 covers mask 0
    mask_logits[0, 0, 0, 1] = big  # slot 0 covers mask 1
    mask_logits[0, 1, 1, 1] = big  # slot 1 sits on the void pixel
    class_logits = torch.zeros(1, 3, 3)
    class_logits[0, 2, 1] = 2.0
    class_logits[0, 0, 0] = 2.0
    match = hungarian_match(mask_logits.requires_grad_(), class_logits, targets)
    assert match.gt_to_slot.tolist() == [[2, 0, -1]]
    assert match.slot_to_gt.tolist() == [[1, -1, 0]]
    probabilities = torch.softmax(mask_logits.detach().flatten(2), dim=1)[0]
    on = float(probabilities[2, 0])  # the winning slot's probability at a pixel it owns
    off = float(probabilities[0, 0])  # any other slot's probability there
    # slot 2 vs mask 0 (2 pixels): intersection 2·on; the void pixel is masked out of Σ m.
    dice_mask0 = 2 * on / ((2 + 2 * on + off) / 2 + 1e-5)
    dice_mask1 = on / ((1 + on + 2 * off) / 2 + 1e-5)
    assert match.matched_dice[0].tolist() == pytest.approx([dice_mask1, 0.0, dice_mask0], rel=1e-5)
    class_prob = math.exp(2.0) / (math.exp(2.0) + 2.0)
    assert match.matched_class_prob[0].tolist() == pytest.approx([class_prob, class_prob, 0.0], rel=1e-6)
    # void ratio of slot 1: its mass on the void pixel over its total mass.
    assert float(match.mask_void_ratio[0, 1]) == pytest.approx(on / (on + 3 * off + 1e-5), rel=1e-5)
    # more GT rows (3) than slots (3)? equal → void rows at −999; all weights detached.
    assert float(match.cost[0, 2, 0]) == -999.0
    assert not match.matched_dice.requires_grad and not match.mask_void_ratio.requires_grad


def test_void_rows_cost_plus_999_when_slots_are_fewer_than_gt_rows():
    targets = _targets([0, 1, 1, -1], [0, 1, -1, -1], [True, True, True, False], (2, 2))
    match = hungarian_match(torch.randn(1, 2, 2, 2), torch.randn(1, 2, 3), targets)
    assert match.cost[0, 2:].eq(999.0).all()
    assert sorted(match.gt_to_slot[0, :2].tolist()) == [0, 1] and match.gt_to_slot[0, 2:].eq(-1).all()


def _two_instance_targets(first_instance_on_top: bool) -> Targets:
    # Two thing instances of class 0 (stripes) on stuff class 1; their raster order decides their thing id.
    panoptic = torch.full((1, 5, 5), 1 * 100)
    top, bottom = (1, 2) if first_instance_on_top else (2, 1)
    panoptic[0, 0:2, :] = 0 * 100 + top
    panoptic[0, 3:5, :] = 0 * 100 + bottom
    return Targets(semantic=panoptic // 100, panoptic=panoptic)


def test_thing_ids_follow_the_raster_order_not_the_instance_ids():
    mask_logits = torch.zeros(1, 4, 5, 5)
    mask_logits[0, 3, 0:2] = 6.0  # slot 3 covers the top stripe
    mask_logits[0, 1, 3:5] = 6.0  # slot 1 the bottom stripe
    mask_logits[0, 0, 2] = 6.0  # slot 0 the stuff row
    class_logits = torch.zeros(1, 4, 3)
    kwargs = dict(output_size=(5, 5), num_classes=2, thing_classes=[0], ignore_label=255, label_divisor=100,
                  max_thing_id=2)
    for first_on_top in (True, False):
        targets = prepare_mask_targets(_two_instance_targets(first_on_top), **kwargs)
        assert hungarian_match(mask_logits, class_logits, targets).gt_to_slot.tolist() == [[3, 1, 0]]


def test_permuting_ground_truth_masks_permutes_the_assignment():
    generator = torch.Generator().manual_seed(5)
    pixel_mask_id = torch.randint(-1, 4, (36,), generator=generator)
    pixel_mask_id[:4] = torch.arange(4)  # every mask present
    mask_logits = torch.randn(1, 6, 6, 6, generator=generator) * 3
    class_logits = torch.randn(1, 6, 5, generator=generator)
    classes = [0, 3, 1, 3]
    targets = _targets(pixel_mask_id.tolist(), classes, (pixel_mask_id >= 0).tolist(), (6, 6))
    assignment = hungarian_match(mask_logits, class_logits, targets).gt_to_slot[0]
    permutation = torch.tensor([2, 0, 3, 1])  # new mask j is old mask permutation[j]
    inverse = permutation.argsort()
    relabelled = torch.where(pixel_mask_id >= 0, inverse[pixel_mask_id.clamp(min=0)], -1)
    permuted = _targets(relabelled.tolist(), [classes[i] for i in permutation], (relabelled >= 0).tolist(), (6, 6))
    assert torch.equal(hungarian_match(mask_logits, class_logits, permuted).gt_to_slot[0], assignment[permutation])


def test_fixed_match_pairs_slot_i_with_class_i():
    targets = _targets([0, 2, 2, -1], [0, -1, 2], [True, True, True, False], (2, 2))
    match = fixed_match(torch.randn(1, 3, 2, 2), torch.randn(1, 3, 4), targets)
    assert match.gt_to_slot.tolist() == [[0, -1, 2]]
    assert match.slot_to_gt.tolist() == [[0, -1, 2]]
    assert match.cost is None
    with pytest.raises(ValueError, match="one slot per GT mask"):
        fixed_match(torch.randn(1, 4, 2, 2), torch.randn(1, 4, 4), targets)
