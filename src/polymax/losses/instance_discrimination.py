"""Pixel-contrastive instance discrimination (CMT-DeepLab; deeplab2 spec §2.5).

K pixels are sampled with the Gumbel-top-k trick, favouring small masks (logits τ_s · log(h·w / area), −99999
on void pixels, so void pixels are only drawn once every non-void pixel is). Among the sampled pixels, every
pixel's target is the uniform distribution over the sampled pixels of its own GT mask; the prediction is a
softmax over F·Fᵀ / τ of their L2-normalised features. Pixels without a GT mask (crowd; void when K exceeds the
non-void pixels) have an all-zero target row, so they add no loss of their own but remain negatives for every
other row. The loss is the mean soft-target cross-entropy over the rows with a non-zero loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polymax.losses.reduction import average_nonzero
from polymax.losses.targets import MaskTargets

# A large negative sampling logit for void pixels (deeplab2's softmax masking constant).
VOID_LOGIT = -99999.0


def gumbel_top_k(logits: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Sample k of the P entries of each row without replacement, with probabilities softmax(logits).

    logits: (B, P). Returns (B, min(k, P)) int64 indices (all P, in order, when k ≥ P: no noise is drawn).
    The noise comes from ``generator`` (on its own device, then moved) so runs can be made reproducible.
    """
    batch, count = logits.shape
    if k >= count:
        return torch.arange(count, device=logits.device).expand(batch, count)
    noise_device = generator.device if generator is not None else logits.device
    uniform = torch.rand(logits.shape, generator=generator, device=noise_device, dtype=torch.float32)
    gumbel = -torch.log(-torch.log(uniform.clamp(min=torch.finfo(torch.float32).tiny)))
    return (logits.detach().float() + gumbel.to(logits.device)).topk(k, dim=1).indices


def sampling_logits(targets: MaskTargets, temperature: float) -> Tensor:
    """(B, P) Gumbel sampling logits: temperature · log(inverse mask area), −99999 on void pixels."""
    logits = torch.log(targets.inverse_mask_area) * temperature
    return torch.where(targets.non_void, logits, logits + VOID_LOGIT)


def instance_discrimination_loss(pixel_features: Tensor, targets: MaskTargets, *, sample_k: int,
                                 sample_temperature: float, temperature: float = 0.3,
                                 generator: torch.Generator | None = None) -> Tensor:
    """pixel_features (B, D, h, w) L2-normalised, at the targets' size → (B,) loss (unweighted).

    sample_k: pixels per image (all of them when sample_k ≥ h·w); a fresh sample on every call.
    sample_temperature: τ_s of the sampling logits; temperature: τ of the similarity logits (0.3 in kMaX).
    """
    features = pixel_features.flatten(2).transpose(1, 2)  # (B, P, D)
    index = gumbel_top_k(sampling_logits(targets, sample_temperature), sample_k, generator)  # (B, S)
    mask_id = targets.pixel_mask_id.gather(1, index)  # (B, S)
    same_mask = (mask_id[:, :, None] == mask_id[:, None, :]) & (mask_id[:, :, None] >= 0)
    target = same_mask.to(features.dtype)
    target = target / target.sum(dim=-1, keepdim=True).clamp(min=1.0)  # (B, S, S), rows sum to 1 or 0

    sampled = features.gather(1, index[:, :, None].expand(-1, -1, features.shape[-1]))  # (B, S, D)
    similarity = sampled @ sampled.transpose(1, 2) / temperature
    cross_entropy = -(target * torch.log_softmax(similarity, dim=-1)).sum(dim=-1)  # (B, S)
    return average_nonzero(cross_entropy)
