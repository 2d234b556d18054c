"""Convolution + BatchNorm (+ activation) blocks, the unit every deeplab2 stage is made of.

deeplab2 convolutions carry no bias when followed by BN. Padding is symmetric ('same' for odd kernels
at stride 1; deeplab2's Conv2DSame pads (k-1)//2 on each side for strided convs, which on 32k+1 inputs
gives the (H-1)/s+1 geometry).
"""

from __future__ import annotations

from torch import Tensor, nn

from polymax.model.layers.norms import batch_norm1d, batch_norm2d


class ConvBN(nn.Module):
    """conv(k×k, stride, dilation, groups, no bias) → BN → optional activation. (B, Cin, H, W) → (B, Cout, H', W')."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 1, stride: int = 1,
                 dilation: int = 1, groups: int = 1, activation: nn.Module | None = None) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=False)
        self.bn = batch_norm2d(out_channels)
        self.act = activation if activation is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class LinearBN(nn.Module):
    """deeplab2's Conv1D on per-cluster vectors: linear (no bias) → BN over channels → optional activation.

    (B, K, Cin) → (B, K, Cout). BN statistics are taken over the batch and the K clusters.
    """

    def __init__(self, in_channels: int, out_channels: int, *, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels, bias=False)
        self.bn = batch_norm1d(out_channels)
        self.act = activation if activation is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x).transpose(1, 2)          # (B, Cout, K) for BatchNorm1d
        return self.act(self.bn(y).transpose(1, 2))


class DepthwiseSeparableConv(nn.Module):
    """depthwise k×k → BN → act → pointwise 1×1 → BN → act (deeplab2 ``depthwise_separable_conv``)."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 5, dilation: int = 1,
                 activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.depthwise = ConvBN(in_channels, in_channels, kernel_size=kernel_size, dilation=dilation,
                                groups=in_channels, activation=activation())
        self.pointwise = ConvBN(in_channels, out_channels, activation=activation())

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))
