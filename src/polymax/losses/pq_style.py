"""The PQ-style loss of MaX-DeepLab / kMaX-DeepLab: a class term and a mask dice term (deeplab2 spec §2.3).

Both terms use the matching of the final output (:class:`polymax.losses.matching.MatchResult`), whose detached
quantities act as weights: matched slots learn their GT class weighted by their mask dice, unmatched slots
learn "void" weighted by their overlap with void pixels, and each GT mask's dice loss is weighted by the
matched slot's probability of the GT class. The focal α balances the two terms (α / K on the dice term).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from polymax.losses.matching import MatchResult
from polymax.losses.reduction import average_nonzero
from polymax.losses.targets import MaskTargets

# Weight floor: a zero weight would make a term vanish from deeplab2's "mean over non-zero" normaliser.
MIN_WEIGHT = 1e-5


def pq_class_term(class_logits: Tensor, match: MatchResult, mask_class: Tensor, *,
                  focal_alpha: float = 0.75) -> Tensor:
    """Focal-weighted (γ = 0) cross-entropy of every slot's class logits. Returns (B,), unweighted.

    class_logits: (B, K, C_out), void last. mask_class: (B, G) GT classes (−1 void).
    Target: the matched GT class, or void for unmatched slots. Per slot the CE is multiplied by α (matched) or
    1 − α (void target) and by max(matched dice, 1e-5) or max(void ratio, 1e-5); the sum over slots is divided
    by the number of non-zero terms.
    """
    void_channel = class_logits.shape[-1] - 1
    matched = match.slot_to_gt >= 0  # (B, K)
    slot_class = mask_class.gather(1, match.slot_to_gt.clamp(min=0))
    target = torch.where(matched, slot_class, void_channel)
    cross_entropy = F.cross_entropy(class_logits.transpose(1, 2), target, reduction="none")  # (B, K)
    alpha = torch.where(matched, focal_alpha, 1.0 - focal_alpha)
    weight = torch.where(matched, match.matched_dice.clamp(min=MIN_WEIGHT), match.mask_void_ratio.clamp(min=MIN_WEIGHT))
    return average_nonzero(cross_entropy * alpha * weight)


def pixel_slot(match: MatchResult, targets: MaskTargets) -> Tensor:
    """(B, P) the slot matched to each pixel's GT mask; −1 for pixels without a mask or whose mask has no slot."""
    mask_id = targets.pixel_mask_id
    slot = match.gt_to_slot.gather(1, mask_id.clamp(min=0))
    return torch.where(mask_id >= 0, slot, -1)


def pq_dice_term(mask_logits: Tensor, match: MatchResult, targets: MaskTargets, *,
                 focal_alpha: float = 0.75) -> Tensor:
    """Σ over GT masks of max(class prob, 1e-5) · (1 − soft dice), × α / K. Returns (B,).

    mask_logits: (B, K, h, w) at the targets' size. The softmax runs over the K slots; the soft dice
    (2 Σ p·g + 1) / (Σ p + Σ g + 1) only counts pixels that belong to some GT mask (void and crowd excluded).
    deeplab2 permutes the logits into GT order with −99999 for padded slots; gathering each GT mask's slot is
    the same computation (a GT mask left without a slot has p = 0).
    """
    batch, num_slots = mask_logits.shape[:2]
    probabilities = torch.softmax(mask_logits.flatten(2), dim=1)  # (B, K, P)
    slot = pixel_slot(match, targets)
    target_prob = probabilities.gather(1, slot.clamp(min=0)[:, None, :]).squeeze(1)
    target_prob = torch.where(slot >= 0, target_prob, 0.0)  # (B, P)

    num_masks = targets.num_masks
    rows = torch.where(targets.pixel_mask_id >= 0, targets.pixel_mask_id, num_masks)
    intersection = target_prob.new_zeros(batch, num_masks + 1).scatter_add(1, rows, target_prob)[:, :num_masks]
    has_mask = (targets.pixel_mask_id >= 0).to(probabilities.dtype)
    slot_mass = torch.einsum("bkp,bp->bk", probabilities, has_mask)  # Σ p over the pixels that have a GT mask
    matched = match.gt_to_slot >= 0
    mask_mass = torch.where(matched, slot_mass.gather(1, match.gt_to_slot.clamp(min=0)), 0.0)  # (B, G)

    dice_loss = 1.0 - (2.0 * intersection + 1.0) / (mask_mass + targets.mask_area + 1.0)
    weight = torch.where(targets.mask_valid, match.matched_class_prob.clamp(min=MIN_WEIGHT), 0.0)
    return (dice_loss * weight).sum(dim=1) * (focal_alpha / num_slots)
