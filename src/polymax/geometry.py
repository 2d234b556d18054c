"""Resizing on deeplab2's ``align_corners=True`` grid: bilinear for values, nearest neighbours for labels.

Output index i sits at input position i·(n_in − 1)/(n_out − 1), rounded: label maps resized this way stay
aligned with images and logits resized bilinearly with align_corners. Shared by augmentation, evaluation
and prediction. Also the model's input contract (32k+1 padded sizes) and :class:`Geometry`, the one way from
model-resolution outputs back to an image's own pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


# --- The model's input contract: 32k+1 sizes, padding at the bottom / right --------------------------------------

PAD_MULTIPLE = 32


def padded_size(size: tuple[int, int]) -> tuple[int, int]:
    """The 32k+1 size an input of ``size`` (H, W) is padded to: 129 → 129, 130 → 161, 100 → 129."""
    height, width = (PAD_MULTIPLE * math.ceil((n - 1) / PAD_MULTIPLE) + 1 for n in size)
    return height, width


def resize_to_input(maps: Tensor, input_size: tuple[int, int], *, mode: str = "bilinear") -> Tensor:
    """(B, C, h, w) model-resolution maps → (B, C, H, W) on the model's input of size ``input_size``.

    Resizes to the padded size (bilinear with align_corners, or nearest) and crops the padding away.
    """
    size = padded_size((input_size[0], input_size[1]))
    if tuple(maps.shape[-2:]) != size:
        if mode == "bilinear":
            maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=True)
        elif mode == "nearest":
            maps = F.interpolate(maps, size=size, mode="nearest")
        else:
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    return maps[..., : input_size[0], : input_size[1]]


@dataclass(frozen=True)
class Geometry:
    """Where one image sits in the network's input, and how maps go back onto it.

    original: the image's (H, W). content: its size after resizing (the box it fills at the top left of the
    network input). network: the padded 32k+1 size the network ran at (≥ content).
    """

    original: tuple[int, int]
    content: tuple[int, int]
    network: tuple[int, int]

    def dense(self, maps: Tensor, *, network_resolution: bool = False) -> Tensor:
        """(B, C, h, w) model-resolution values → (B, C, H, W) on the original image: resized onto the network
        input (bilinear, align_corners; skipped when already ``network_resolution``), padding cropped, resized
        to the original size."""
        if not network_resolution:
            maps = resize_to_input(maps.float(), self.network)
        return resize_bilinear(maps[..., : self.content[0], : self.content[1]], self.original)

    def labels(self, labels: Tensor) -> Tensor:
        """(..., H_net, W_net) integer map at the network input → (..., H, W) on the original image (nearest,
        align-corners grid)."""
        return resize_nearest(labels[..., : self.content[0], : self.content[1]], self.original)
