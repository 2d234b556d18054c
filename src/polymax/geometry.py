"""Resizing on deeplab2's ``align_corners=True`` grid: bilinear for values, nearest neighbours for labels.

Output index i sits at input position i·(n_in − 1)/(n_out − 1), rounded: label maps resized this way stay
aligned with images and logits resized bilinearly with align_corners. Shared by augmentation, evaluation
and prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nearest_indices(size_in: int, size_out: int, device: torch.device | str | None = None) -> Tensor:
    """(size_out,) int64 input indices of an align-corners nearest-neighbour resize along one axis."""
    if size_out == 1:
        return torch.zeros(1, dtype=torch.long, device=device)
    positions = torch.arange(size_out, dtype=torch.float64, device=device) * (size_in - 1) / (size_out - 1)
    return positions.round().long().clamp_(0, size_in - 1)


def resize_nearest(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(..., H', W') → (..., H, W) by align-corners nearest neighbours (labels, masks, any dtype)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    rows = nearest_indices(maps.shape[-2], size[0], maps.device)
    cols = nearest_indices(maps.shape[-1], size[1], maps.device)
    return maps[..., rows, :][..., cols]


def resize_bilinear(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, h, w) → (B, C, H, W), bilinear with align_corners=True (a no-op at the same size)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=True)
