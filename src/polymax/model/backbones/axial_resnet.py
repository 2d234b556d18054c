"""MaX-S ("axial ResNet-50 with GELU"), the kMaX-DeepLab MaX-S encoder.

A ResNet-50 with an inception stem, GELU everywhere, and axial-attention blocks wherever a block's input
runs at stride ≥ 16:

  stem: 3×3/2 (64) BN GELU → 3×3 (64) BN GELU → 3×3 (128) BN              stage1 (B, 128, H/2, W/2)
  stage2, stage3: 3 / 4 bottlenecks (filters 64 / 128)                     stage2, stage3 (256 / 512 ch)
  stage4: 1 strided bottleneck, then 5 axial blocks (filters 256)          stage4 (1024 ch, H/16)
  stage5: 3 axial blocks (filters 512), the first strided                  stage5 (2048 ch, H/32)

An axial block is 1×1 (2f) → height-then-width attention (8 heads, key f, value 2f) → GELU → 1×1 (4f); a
strided one attends at full resolution and keeps every second row / column. Axial attention is global
along each axis; deeplab2 limits an axis to 129 positions (the RPE tables reach ±254, longer axes share the
outermost rows here). Stride arithmetic as in resnet.py: ⌈n/s⌉ at stride s.
"""

from __future__ import annotations

from torch import Tensor, nn

from polymax.model.backbones.resnet import ResNet
from polymax.model.layers.blocks import init_convolutions, resnet_stage
from polymax.model.layers.conv import ConvBN


class InceptionStem(nn.Module):
    """Three 3×3 convs, the first with stride 2; the output is not activated. (B, 3, H, W) → (B, 2w, H/2, W/2)."""

    def __init__(self, width: int = 64, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.conv1 = ConvBN(3, width, kernel_size=3, stride=2, activation=activation())
        self.conv2 = ConvBN(width, width, kernel_size=3, activation=activation())
        self.conv3 = ConvBN(width, 2 * width, kernel_size=3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class AxialResNet(nn.Module):
    """deeplab2 ``axial_resnet50`` (backbone_type 'resnet_beta', use_axial_beyond_stride 16, GELU).

    drop_path_keep: final keep of the linear schedule at stride ≥ 16 (0.8 in the kMaX MaX-S configs).
    checkpoint: gradient checkpointing of stage2..5 in training, as in :class:`ResNet`.
    """

    def __init__(self, *, depths: tuple[int, ...] = (3, 4, 6, 3), width: int = 64, drop_path_keep: float = 1.0,
                 axial_beyond_stride: int = 16, num_heads: int = 8, checkpoint: bool = False) -> None:
        super().__init__()
        if len(depths) != 4:
            raise ValueError(f"AxialResNet needs 4 stage depths, got {depths}")
        self.stem = InceptionStem(width, activation=nn.GELU)
        filters = (width, 2 * width, 4 * width, 8 * width)
        in_channels = (2 * width, 4 * width, 8 * width, 16 * width)
        self.stage2, self.stage3, self.stage4, self.stage5 = (
            resnet_stage(in_channels[i], filters[i], depths[i], input_stride=2 ** (i + 1), stride=2,
                         activation=nn.GELU, drop_path_keep=drop_path_keep,
                         axial_beyond_stride=axial_beyond_stride, num_heads=num_heads)
            for i in range(4))
        self.channels: tuple[int, ...] = (2 * width, 4 * width, 8 * width, 16 * width, 32 * width)
        self.strides: tuple[int, ...] = (2, 4, 8, 16, 32)
        self.checkpoint = checkpoint
        init_convolutions(self)

    # The same stem → stage2..5 data flow as the plain ResNet.
    forward = ResNet.forward


def axial_resnet50(*, drop_path_keep: float = 1.0, checkpoint: bool = False) -> AxialResNet:
    """MaX-S: 41.34M parameters, endpoints (128, 256, 512, 1024, 2048) channels."""
    return AxialResNet(depths=(3, 4, 6, 3), width=64, drop_path_keep=drop_path_keep, checkpoint=checkpoint)
