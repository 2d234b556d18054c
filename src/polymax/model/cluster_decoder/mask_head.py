"""The kMaX mask head: per-pixel embeddings × per-cluster mask kernels → mask logits.

One structure serves the final prediction and each kMaX layer's auxiliary prediction (each with its own
weights; deeplab2 ``MaXDeepLab`` head, spec §1.4):

    pixels (B, Cp, h, w) → depthwise 5×5 → BN → GELU → 1×1 → BN → GELU → 1×1 (+bias) → BN → L2-normalise
                         = pixel_features F (B, D, h, w)
    mask_embeddings (B, K, E) → linear (no bias) → BN = kernels W (B, K, D)
    mask_logits = BN₁(Σ_d F·W)  (B, K, h, w), BN₁ a single-channel BN shared by every logit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polymax.model.layers.conv import DepthwiseSeparableConv, LinearBN
from polymax.model.layers.norms import batch_norm2d
from polymax.structures import MaskPrediction


def l2_normalise(x: Tensor, dim: int = 1) -> Tensor:
    """x / ‖x‖ with TensorFlow's guard (the squared norm is clamped at 1e-12, not the norm)."""
    return x * torch.rsqrt(x.square().sum(dim=dim, keepdim=True).clamp_min(1e-12))


class PixelSpaceHead(nn.Module):
    """(B, Cin, h, w) → L2-normalised pixel embeddings (B, D, h, w)."""

    def __init__(self, *, in_channels: int, head_channels: int = 256, out_channels: int = 128,
                 kernel_size: int = 5) -> None:
        super().__init__()
        self.conv = DepthwiseSeparableConv(in_channels, head_channels, kernel_size=kernel_size)
        self.project = nn.Conv2d(head_channels, out_channels, 1, bias=True)
        self.norm = batch_norm2d(out_channels)

    def forward(self, pixels: Tensor) -> Tensor:
        return l2_normalise(self.norm(self.project(self.conv(pixels))), dim=1)


class MaskHead(nn.Module):
    """Mask logits from pixel embeddings and per-cluster mask embeddings.

    ``forward(pixels, mask_embeddings, value_features=None, pixel_features=None)``: pixels (B, Cp, h, w),
    mask_embeddings (B, K, E); value_features (B, K, E) are passed through as ``MaskPrediction.cluster_features``
    for the task head (the final head uses the class embeddings; the auxiliary heads reuse the mask embeddings).
    pixel_features: ``embed(pixels)`` computed once and shared by several query groups' passes (it does not
    depend on the clusters); None computes it.
    """

    def __init__(self, *, pixel_channels: int = 256, cluster_channels: int = 256, head_channels: int = 256,
                 mask_dim: int = 128) -> None:
        super().__init__()
        self.pixel_head = PixelSpaceHead(in_channels=pixel_channels, head_channels=head_channels,
                                         out_channels=mask_dim)
        self.mask_kernel = LinearBN(cluster_channels, mask_dim)
        # One γ/β for all logits; deeplab2 initialises γ to 0.1 so the initial softmax over K is soft.
        self.logit_norm = batch_norm2d(1)
        nn.init.constant_(self.logit_norm.weight, 0.1)

    def embed(self, pixels: Tensor) -> Tensor:
        """(B, Cp, h, w) → the L2-normalised pixel embeddings (B, D, h, w)."""
        return self.pixel_head(pixels)

    def forward(self, pixels: Tensor, mask_embeddings: Tensor, value_features: Tensor | None = None,
                pixel_features: Tensor | None = None) -> MaskPrediction:
        features = self.embed(pixels) if pixel_features is None else pixel_features    # (B, D, h, w)
        kernels = self.mask_kernel(mask_embeddings)                        # (B, K, D)
        logits = torch.einsum("bdhw,bkd->bkhw", features, kernels)         # (B, K, h, w)
        # BN over every logit as one channel: view (B, K, h, w) as (B, 1, K, h·w).
        logits = self.logit_norm(logits.flatten(2).unsqueeze(1)).reshape(logits.shape)
        return MaskPrediction(mask_logits=logits, pixel_features=features,
                              cluster_features=mask_embeddings if value_features is None else value_features)
