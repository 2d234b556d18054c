"""Residual blocks of deeplab2's (axial) ResNets, shared by the backbones and the pixel decoder.

deeplab2 ``AxialBlock`` semantics: a block takes an *un-activated* tensor s and returns an un-activated sum,

    a   = act(s)
    out = drop_path(branch(a)) + shortcut(a)
    bottleneck branch: 1×1 (f) → BN → act → 3×3 (f, stride, dilation) → BN → act → 1×1 (4f) → BN
    axial branch:      1×1 (2f) → BN → act → axial attention (key f, value 2f, stride) → act → 1×1 (4f) → BN
    shortcut:          1×1 conv (stride) + BN when the channel count changes, else a (subsampled [::s])

so stage endpoints are pre-activation sums, and whatever feeds a stage (a stem output, the pixel decoder's
LayerNorm or ResizedFuse output) is activated by the stage's first block. The last branch BN starts at
γ = 0 so that a freshly initialised block is the identity on its shortcut.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from polymax.model.layers.axial_attention import AxialAttention2D
from polymax.model.layers.conv import ConvBN
from polymax.model.layers.drop_path import DropPath


class BottleneckBlock(nn.Module):
    """1×1 → 3×3 (stride, dilation) → 1×1 residual block. (B, C_in, H, W) → (B, 4f, ⌈H/s⌉, ⌈W/s⌉)."""

    def __init__(self, in_channels: int, filters: int, *, stride: int = 1, dilation: int = 1,
                 activation: type[nn.Module] = nn.ReLU, drop_path_keep: float = 1.0) -> None:
        super().__init__()
        self.stride = stride
        self.act = activation()
        self.conv1 = ConvBN(in_channels, filters, activation=activation())
        self.conv2 = ConvBN(filters, filters, kernel_size=3, stride=stride, dilation=dilation,
                            activation=activation())
        self.conv3 = ConvBN(filters, 4 * filters)
        self.shortcut = ConvBN(in_channels, 4 * filters, stride=stride) if in_channels != 4 * filters else None
        self.drop_path = DropPath(drop_path_keep)
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.act(x)
        branch = self.conv3(self.conv2(self.conv1(activated)))
        return self.drop_path(branch) + residual_shortcut(self.shortcut, activated, self.stride)


class AxialBlock(nn.Module):
    """1×1 → 2-D axial attention (stride) → 1×1 residual block. (B, C_in, H, W) → (B, 4f, ⌈H/s⌉, ⌈W/s⌉)."""

    def __init__(self, in_channels: int, filters: int, *, stride: int = 1, activation: type[nn.Module] = nn.GELU,
                 drop_path_keep: float = 1.0, num_heads: int = 8) -> None:
        super().__init__()
        self.stride = stride
        self.act = activation()
        self.conv1 = ConvBN(in_channels, 2 * filters, activation=activation())
        self.attention = AxialAttention2D(2 * filters, key_depth=filters, value_depth=2 * filters,
                                          num_heads=num_heads, stride=stride)
        self.attention_act = activation()
        self.conv3 = ConvBN(2 * filters, 4 * filters)
        self.shortcut = ConvBN(in_channels, 4 * filters, stride=stride) if in_channels != 4 * filters else None
        self.drop_path = DropPath(drop_path_keep)
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.act(x)
        branch = self.conv3(self.attention_act(self.attention(self.conv1(activated))))
        return self.drop_path(branch) + residual_shortcut(self.shortcut, activated, self.stride)


def residual_shortcut(projection: nn.Module | None, activated: Tensor, stride: int) -> Tensor:
    """A block's shortcut branch: the 1×1 projection, or the activated input subsampled [::stride]."""
    if projection is not None:
        return projection(activated)
    return activated[:, :, ::stride, ::stride] if stride > 1 else activated


class ResidualStage(nn.Module):
    """A chain of residual blocks (deeplab2 ``BlockGroup``); un-activated in, un-activated out."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def drop_path_keep_at_stride(stride: int, final_keep: float, *, beyond_stride: int = 16) -> float:
    """deeplab2's 'linear' schedule over the four ResNet stages, applied only at stride ≥ beyond_stride.

    stage = log2(stride) − 1 (stride 16 → 3, stride 32 → 4); keep = 1 − (1 − final_keep) · stage / 4.
    """
    if stride < beyond_stride:
        return 1.0
    stage = round(math.log2(stride)) - 1
    return 1.0 - (1.0 - final_keep) * stage / 4


def resnet_stage(in_channels: int, filters: int, num_blocks: int, *, input_stride: int, stride: int,
                 activation: type[nn.Module], drop_path_keep: float = 1.0, axial_beyond_stride: int = 0,
                 num_heads: int = 8) -> ResidualStage:
    """One backbone stage. The first block carries the stride; each block's 'current stride' (the stride of
    its input: input_stride for the first block, input_stride·stride after it) decides whether it is an axial
    block (current ≥ axial_beyond_stride > 0) and its drop-path keep probability.
    """
    blocks: list[nn.Module] = []
    current = input_stride
    for index in range(num_blocks):
        block_in = in_channels if index == 0 else 4 * filters
        block_stride = stride if index == 0 else 1
        keep = drop_path_keep_at_stride(current, drop_path_keep)
        if 0 < axial_beyond_stride <= current:
            blocks.append(AxialBlock(block_in, filters, stride=block_stride, activation=activation,
                                     drop_path_keep=keep, num_heads=num_heads))
        else:
            blocks.append(BottleneckBlock(block_in, filters, stride=block_stride, activation=activation,
                                          drop_path_keep=keep))
        current *= block_stride
    return ResidualStage(blocks)


def init_convolutions(module: nn.Module) -> None:
    """He-normal (fan-in) initialisation for every Conv2d under module, as deeplab2's Conv2DSame."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
