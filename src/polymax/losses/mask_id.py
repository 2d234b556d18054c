"""Mask-ID cross-entropy (deeplab2 spec §2.4): every pixel classifies which slot it belongs to.

The target of a pixel is the slot matched to its GT mask; the softmax runs over all K slots. Pixels without a
GT mask (void, crowd) contribute nothing, and the loss is averaged over the non-zero pixel losses.

Deviation from deeplab2, only when there are more GT masks than slots: deeplab2 points the pixels of a GT mask
left without a slot at a padded logit of −99999 (a loss of about 1e5 per pixel); here they are left out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polymax.losses.matching import MatchResult
from polymax.losses.pq_style import pixel_slot
from polymax.losses.reduction import average_nonzero
from polymax.losses.targets import MaskTargets


def mask_id_cross_entropy(mask_logits: Tensor, match: MatchResult, targets: MaskTargets, *,
                          top_k_percent: float = 1.0) -> Tensor:
    """mask_logits (B, K, h, w) at the targets' size → (B,) mean CE over the pixels that have a matched slot."""
    logits = mask_logits.flatten(2)  # (B, K, P)
    slot = pixel_slot(match, targets)
    target_logit = logits.gather(1, slot.clamp(min=0)[:, None, :]).squeeze(1)
    cross_entropy = torch.logsumexp(logits, dim=1) - target_logit  # (B, P)
    keep = (slot >= 0) & targets.non_void
    return average_nonzero(torch.where(keep, cross_entropy, 0.0), top_k_percent)
