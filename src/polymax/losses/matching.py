"""Bipartite matching between predicted mask slots and ground-truth masks (kMaX-DeepLab, deeplab2 spec §2.2).

The matching is computed once, on the final output, and reused by every deep-supervision output. All returned
quantities are detached: they are loss *weights*, not loss terms.

- soft masks m = softmax over the K slots of the mask logits, times the non-void pixel mask;
- dice(g, m) = Σ g·m / ((Σ g + Σ m) / 2 + 1e-5);
- class similarity = p(class of g), from a softmax over all C_out channels with the void column dropped
  afterwards (no renormalisation);
- cost W = −dice × class similarity, minimised by ``scipy.optimize.linear_sum_assignment``. Void GT rows get
  +999 when there are fewer slots than GT rows (so that slots prefer real masks) and −999 otherwise, as deeplab2
  pads its square Hungarian problem.

``fixed_match`` is the PolyMaX semantic layout instead: slot i is GT mask i (K = C, one mask per class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

if TYPE_CHECKING:  # only for annotations: polymax.losses imports this module
    from polymax.losses.targets import MaskTargets

_VOID_ROW_COST = 999.0
_EPSILON = 1e-5


@dataclass
class MatchResult:
    """A slot ↔ GT-mask assignment and the detached weights the losses derive from it (G GT masks, K slots).

    gt_to_slot: (B, G) int64, the slot matched to each GT mask; −1 for void GT masks and for real ones left
        without a slot (more GT masks than slots).
    slot_to_gt: (B, K) int64, the inverse map; −1 for unmatched slots.
    matched_dice: (B, K) float, dice between each matched slot and its GT mask; 0 for unmatched slots.
    matched_class_prob: (B, G) float, the matched slot's probability of the GT class; 0 without a match.
    mask_void_ratio: (B, K) float, Σ_void-pixels m / (Σ_all m + 1e-5) with m = softmax over slots.
    cost: (B, G, K) the matrix given to the solver (None for the fixed assignment).
    """

    gt_to_slot: Tensor
    slot_to_gt: Tensor
    matched_dice: Tensor
    matched_class_prob: Tensor
    mask_void_ratio: Tensor
    cost: Tensor | None = None


def mask_dice_similarity(probabilities: Tensor, targets: MaskTargets) -> Tensor:
    """Dice between every GT mask and every soft predicted mask.

    probabilities: (B, K, P) soft masks (already multiplied by the non-void mask). Returns (B, G, K).
    """
    batch, num_slots, _ = probabilities.shape
    num_masks = targets.num_masks
    intersections = []
    for b in range(batch):
        # Σ_p [mask(p) = g] m_k(p) by index_add into G + 1 rows; row G collects the pixels without a mask.
        rows = torch.where(targets.pixel_mask_id[b] >= 0, targets.pixel_mask_id[b], num_masks)
        summed = probabilities.new_zeros(num_masks + 1, num_slots).index_add_(0, rows, probabilities[b].T)
        intersections.append(summed[:num_masks])
    intersection = torch.stack(intersections)
    denominator = (targets.mask_area[:, :, None] + probabilities.sum(-1)[:, None, :]) / 2
    return intersection / (denominator + _EPSILON)


def class_similarity(class_logits: Tensor, mask_class: Tensor) -> Tensor:
    """p_k(class of g): (B, K, C_out) logits (void last) and (B, G) classes (−1 void) → (B, G, K), 0 for void."""
    probs = torch.softmax(class_logits, dim=-1)[..., :-1]  # (B, K, C), void dropped, not renormalised
    gathered = probs.gather(2, mask_class.clamp(min=0)[:, None, :].expand(-1, probs.shape[1], -1))  # (B, K, G)
    return torch.where(mask_class[:, :, None] >= 0, gathered.transpose(1, 2), 0.0)


def _void_ratio(probabilities: Tensor, non_void: Tensor) -> Tensor:
    """(B, K, P) unmasked soft masks, (B, P) bool → (B, K) share of each slot's mass on void pixels."""
    void = (~non_void).to(probabilities.dtype)
    return torch.einsum("bkp,bp->bk", probabilities, void) / (probabilities.sum(-1) + _EPSILON)


def _result(gt_to_slot: Tensor, dice: Tensor, class_sim: Tensor, void_ratio: Tensor, num_slots: int,
            cost: Tensor | None) -> MatchResult:
    batch = gt_to_slot.shape[0]
    matched = gt_to_slot >= 0
    slot = gt_to_slot.clamp(min=0)
    slot_to_gt = torch.full((batch, num_slots), -1, dtype=torch.int64, device=gt_to_slot.device)
    matched_dice = dice.new_zeros(batch, num_slots)
    pair_dice = dice.gather(2, slot[:, :, None]).squeeze(2)  # (B, G)
    pair_class = class_sim.gather(2, slot[:, :, None]).squeeze(2)
    for b in range(batch):
        gts = matched[b].nonzero().squeeze(1)
        slot_to_gt[b, gt_to_slot[b, gts]] = gts
        matched_dice[b, gt_to_slot[b, gts]] = pair_dice[b, gts]
    return MatchResult(gt_to_slot=gt_to_slot, slot_to_gt=slot_to_gt, matched_dice=matched_dice,
                       matched_class_prob=torch.where(matched, pair_class, 0.0), mask_void_ratio=void_ratio,
                       cost=cost)


def _scores(mask_logits: Tensor, class_logits: Tensor | None,
            targets: MaskTargets) -> tuple[Tensor, Tensor, Tensor]:
    probabilities = torch.softmax(mask_logits.detach().flatten(2).float(), dim=1)  # (B, K, P)
    non_void = targets.non_void
    dice = mask_dice_similarity(probabilities * non_void[:, None, :].to(probabilities.dtype), targets)
    if class_logits is None:  # fixed assignment without a class head: every slot is sure of its class
        class_sim = targets.mask_valid[:, :, None].expand_as(dice).to(dice.dtype)
    else:
        class_sim = class_similarity(class_logits.detach().float(), targets.mask_class)
    return dice, class_sim, _void_ratio(probabilities, non_void)


def solve_assignment(cost: Tensor) -> Tensor:
    """Minimum-cost assignment of the rows of (B, G, K) cost matrices to distinct columns.

    Returns (B, G) int64, the column of each row; −1 for the rows left over when G > K.
    """
    row_to_column = torch.full(cost.shape[:2], -1, dtype=torch.int64)
    for b, matrix in enumerate(cost.detach().cpu().double().numpy()):
        rows, columns = linear_sum_assignment(matrix)
        row_to_column[b, torch.as_tensor(rows, dtype=torch.int64)] = torch.as_tensor(columns, dtype=torch.int64)
    return row_to_column.to(cost.device)


def hungarian_match(mask_logits: Tensor, class_logits: Tensor, targets: MaskTargets) -> MatchResult:
    """Hungarian matching on the final output. mask_logits (B, K, h, w); class_logits (B, K, C_out) void last."""
    dice, class_sim, void_ratio = _scores(mask_logits, class_logits, targets)
    num_slots = mask_logits.shape[1]
    valid = targets.mask_valid[:, :, None]
    void_cost = _VOID_ROW_COST if num_slots < targets.num_masks else -_VOID_ROW_COST
    cost = torch.where(valid, -dice * class_sim, void_cost)  # (B, G, K)
    gt_to_slot = torch.where(targets.mask_valid, solve_assignment(cost), -1)
    return _result(gt_to_slot, dice, class_sim, void_ratio, num_slots, cost)


def fixed_match(mask_logits: Tensor, class_logits: Tensor | None, targets: MaskTargets) -> MatchResult:
    """Slot i ↔ GT mask i (PolyMaX semantic head: K = G = C). Same inputs and weights as ``hungarian_match``;
    without class logits the matched class probabilities are 1."""
    num_slots = mask_logits.shape[1]
    if num_slots != targets.num_masks:
        raise ValueError(f"fixed matching needs one slot per GT mask: {num_slots} slots, {targets.num_masks} masks")
    dice, class_sim, void_ratio = _scores(mask_logits, class_logits, targets)
    slots = torch.arange(num_slots, device=mask_logits.device).expand_as(targets.mask_class)
    gt_to_slot = torch.where(targets.mask_valid, slots, -1)
    return _result(gt_to_slot, dice, class_sim, void_ratio, num_slots, None)
