"""Auxiliary semantic loss (deeplab2 spec §2.6): a top-k, pixel-weighted cross-entropy on the semantic head.

deeplab2's released builder computes it on every pixel (its sub-sampling options are never passed to the loss);
that is the default here. ``sample_k > 0`` switches on the Gumbel-top-k pixel sub-sampling that the kMaX-DeepLab
paper and its PyTorch port use (K = 4096, τ = 2.0): pixels of small masks are favoured, void pixels skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from polymax.losses.instance_discrimination import gumbel_top_k, sampling_logits
from polymax.losses.reduction import average_nonzero
from polymax.losses.targets import MaskTargets, strided_downsample


def semantic_loss(semantic_logits: Tensor, semantic: Tensor, weight: Tensor | None, *, ignore_label: int,
                  top_k_percent: float = 1.0, sample_k: int = 0, sampling_targets: MaskTargets | None = None,
                  sample_temperature: float = 2.0, generator: torch.Generator | None = None) -> Tensor:
    """Cross-entropy of (B, C_sem, h, w) logits against (B, H, W) labels → (B,), unweighted.

    The labels (and per-pixel ``weight``, (B, H, W) or None for ones) are strided-downsampled to (h, w). Label c
    is channel c; channels beyond the classes (e.g. a void channel) only act in the softmax's denominator.
    Pixels with ``ignore_label`` weigh 0; the loss is the mean over the non-zero (top-k) pixel losses.
    With ``sample_k > 0`` only a Gumbel-top-k sample of the pixels counts; ``sampling_targets`` (the GT masks at
    (h, w)) gives the sampling logits.
    """
    size = semantic_logits.shape[-2:]
    labels = strided_downsample(semantic, size).flatten(1).long()  # (B, P)
    weights = torch.ones_like(labels, dtype=semantic_logits.dtype) if weight is None else (
        strided_downsample(weight, size).flatten(1).to(semantic_logits.dtype))
    keep = labels != ignore_label
    if bool(((labels < 0) | (labels >= semantic_logits.shape[1]))[keep].any()):
        raise ValueError(f"semantic labels must lie in 0..{semantic_logits.shape[1] - 1} or be {ignore_label}")
    safe_labels = torch.where(keep, labels, 0)
    cross_entropy = F.cross_entropy(semantic_logits.flatten(2), safe_labels, reduction="none")  # (B, P)
    losses = torch.where(keep, cross_entropy * weights, 0.0)
    if sample_k > 0:
        if sampling_targets is None or tuple(sampling_targets.size) != tuple(size):
            raise ValueError("semantic sub-sampling needs the GT masks at the semantic logits' size")
        index = gumbel_top_k(sampling_logits(sampling_targets, sample_temperature), sample_k, generator)
        losses = losses.gather(1, index)
    return average_nonzero(losses, top_k_percent)


def small_instance_weights(panoptic: Tensor, *, thing_classes: Sequence[int], label_divisor: int, max_area: int,
                           weight: float) -> Tensor:
    """Per-pixel semantic-loss weights of deeplab2's Cityscapes recipe: ``weight`` on every pixel of a thing
    instance covering fewer than ``max_area`` pixels, 1 elsewhere.

    panoptic: (B, H, W) int64 class * label_divisor + instance (instance 0 = stuff or crowd, never up-weighted).
    Returns (B, H, W) float32.
    """
    weights = torch.ones(panoptic.shape, dtype=torch.float32, device=panoptic.device)
    classes, instances = panoptic // label_divisor, panoptic % label_divisor
    things = torch.as_tensor(tuple(thing_classes), dtype=panoptic.dtype, device=panoptic.device)
    is_instance = torch.isin(classes, things) & (instances > 0)
    for index in range(panoptic.shape[0]):
        pixels = is_instance[index]
        _, inverse, counts = torch.unique(panoptic[index][pixels], return_inverse=True, return_counts=True)
        small = counts[inverse] < max_area
        weights[index][pixels] = torch.where(small, torch.full_like(small, weight, dtype=torch.float32), 1.0)
    return weights
