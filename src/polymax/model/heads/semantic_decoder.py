"""The training-only auxiliary semantic branch (spec §1.4, "Auxiliary semantic head").

It predicts per-pixel semantic logits straight from the backbone for an extra cross-entropy loss; it does
not feed inference and is left out of inference parameter counts. Two variants, as in deeplab2:

* :class:`SemanticDecoderBranch` (COCO / ADE20K): ASPP on stage5 (1×1, three 3×3 atrous convs at rates
  6/12/18, image pooling; 5×256 → 1×1 → 256, dropout 0.1), then fusion with act(stage3) projected to 64
  and act(stage2) projected to 32 (upsample, concatenate, depthwise-separable 5×5 → 256), then the head.
  Output stride 4.
* :class:`SemanticHeadBranch` (Cityscapes): the head alone on the raw stage5 map. Output stride 32.

The head is depthwise-separable 5×5 → 256, then a 1×1 conv with bias to C + 1 channels: our classes
0..C−1 and a void channel last, the same layout as the class logits (the loss ignores void pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.model.layers.conv import ConvBN, DepthwiseSeparableConv
from polymax.structures import Features


def _resize(x: Tensor, size: tuple[int, ...]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class SemanticHead(nn.Module):
    """(B, Cin, h, w) → depthwise-separable 5×5 → (B, channels, h, w) → 1×1 (+bias) → (B, num_logits, h, w)."""

    def __init__(self, *, in_channels: int, num_logits: int, channels: int = 256) -> None:
        super().__init__()
        self.conv = DepthwiseSeparableConv(in_channels, channels, kernel_size=5)
        self.classifier = nn.Conv2d(channels, num_logits, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.conv(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: (B, Cin, h, w) → (B, channels, h, w)."""

    def __init__(self, *, in_channels: int, channels: int = 256, rates: tuple[int, ...] = (6, 12, 18),
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.conv1x1 = ConvBN(in_channels, channels, activation=nn.GELU())
        self.atrous = nn.ModuleList(ConvBN(in_channels, channels, kernel_size=3, dilation=rate,
                                           activation=nn.GELU()) for rate in rates)
        self.pool = ConvBN(in_channels, channels, activation=nn.GELU())
        self.project = ConvBN(channels * (len(rates) + 2), channels, activation=nn.GELU())
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        # Image-level branch: global mean → 1×1 conv → BN, broadcast back (resizing a 1×1 map is a broadcast).
        # Broadcasting *before* the conv gives the same values and BN statistics, and lets BN train with
        # batch size 1 (a (1, C, 1, 1) batch has no variance to normalise by).
        pooled = self.pool(x.mean(dim=(2, 3), keepdim=True).expand(-1, -1, *x.shape[2:]))
        branches = [self.conv1x1(x), *(conv(x) for conv in self.atrous), pooled]
        return self.dropout(self.project(torch.cat(branches, dim=1)))


class SemanticDecoderBranch(nn.Module):
    """COCO / ADE20K branch. ``forward(features) -> (B, num_logits, H/4, W/4)``.

    stage_channels: channels of (stage2, stage3, stage5); endpoint_activation: the backbone's activation
    ('relu' or 'gelu') that turns the un-activated stage2 / stage3 endpoints into deeplab2's res2 / res3.
    """

    def __init__(self, *, stage_channels: tuple[int, int, int], num_logits: int, endpoint_activation: str,
                 channels: int = 256, low_level_channels: tuple[int, int] = (64, 32)) -> None:
        super().__init__()
        if endpoint_activation not in ("relu", "gelu"):
            raise ValueError(f"endpoint_activation must be 'relu' or 'gelu', got {endpoint_activation!r}")
        self.endpoint_activation = endpoint_activation
        stage2, stage3, stage5 = stage_channels
        self.aspp = ASPP(in_channels=stage5, channels=channels)
        # Fusion order: first with res3 (os8), then with res2 (os4).
        self.low_level = nn.ModuleList([ConvBN(stage3, low_level_channels[0], activation=nn.GELU()),
                                        ConvBN(stage2, low_level_channels[1], activation=nn.GELU())])
        self.fusion = nn.ModuleList(DepthwiseSeparableConv(channels + c, channels, kernel_size=5)
                                    for c in low_level_channels)
        self.head = SemanticHead(in_channels=channels, num_logits=num_logits, channels=channels)

    def forward(self, features: Features) -> Tensor:
        act = F.relu if self.endpoint_activation == "relu" else F.gelu
        x = self.aspp(features.stage5)
        for low_level, fusion, endpoint in zip(self.low_level, self.fusion, (features.stage3, features.stage2)):
            skip = low_level(act(endpoint))
            x = fusion(torch.cat([_resize(x, skip.shape[2:]), skip], dim=1))
        return self.head(x)


class SemanticHeadBranch(nn.Module):
    """Cityscapes branch: the semantic head on the raw stage5 map.

    ``forward(features) -> (B, num_logits, H/32, W/32)``."""

    def __init__(self, *, in_channels: int, num_logits: int, channels: int = 256) -> None:
        super().__init__()
        self.head = SemanticHead(in_channels=in_channels, num_logits=num_logits, channels=channels)

    def forward(self, features: Features) -> Tensor:
        return self.head(features.stage5)
