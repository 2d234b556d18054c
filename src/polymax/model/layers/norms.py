"""Normalisation layers with deeplab2's constants.

deeplab2 uses Keras BatchNormalization with momentum 0.99 and epsilon 1e-3 everywhere (also inside
attention and on the mask logits). PyTorch's momentum is the weight of the *new* statistic, hence 0.01.
Several fixture BN variances are of the order of epsilon, so the value matters for parity.
"""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
LN_EPS = 1e-6


def batch_norm2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def batch_norm1d(channels: int) -> nn.BatchNorm1d:
    """BN over the channel axis of (B, C, L) or (B, C) tensors."""
    return nn.BatchNorm1d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW map (Keras ``LayerNormalization(axis=-1)`` on NHWC)."""

    def __init__(self, channels: int, eps: float = LN_EPS) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
