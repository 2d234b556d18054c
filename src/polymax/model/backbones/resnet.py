"""deeplab2's ResNet-50, the kMaX-DeepLab R50 encoder (not torchvision's variant).

image (B, 3, H, W), already scaled to [-1, 1]
  → stem: 7×7/2 conv + BN, no activation, no max-pool                  stage1 (B, w, H/2, W/2)
  → stage2: 3 bottlenecks, stride 2 in the first 3×3             stage2 (B, 4w, H/4, W/4)
  → stage3..5: 4 / 6 / 3 bottlenecks, stride 2 in the first     stage3..5 (B, 8w/16w/32w, H/8..H/32)

Endpoints are the un-activated residual sums (the pixel decoder's LayerNorm sees them raw).

Stride arithmetic: every stride-2 op is an odd kernel with symmetric padding (k − 1)/2 (1×1 shortcuts take
[::2]), so a side of n pixels becomes ⌈n/2⌉ at each halving and ⌈n/s⌉ at stride s. A 32k+1 side gives
(n − 1)/s + 1 (129 → 65, 33, 17, 9, 5), the geometry whose align_corners resizes are exact; any other size
works too (64×80 → 2×3 at stride 32).
"""

from __future__ import annotations

from torch import Tensor, nn

from polymax.model.backbones.checkpointing import run_stage
from polymax.model.layers.blocks import init_convolutions, resnet_stage
from polymax.model.layers.conv import ConvBN
from polymax.structures import Features


class ResNet(nn.Module):
    """deeplab2 ResNet with bottleneck widths width·(1, 2, 4, 8) and stem width `width`.

    drop_path_keep: final keep probability of deeplab2's linear schedule, applied only to blocks whose input
    runs at stride ≥ 16 (stage4 blocks 2+ and stage5). The kMaX R50 configs use 1.0 (no drop path).
    checkpoint: gradient checkpointing of stage2..5 in training (:mod:`.checkpointing`; the stem is cheap).
    """

    def __init__(self, *, depths: tuple[int, ...] = (3, 4, 6, 3), width: int = 64,
                 drop_path_keep: float = 1.0, checkpoint: bool = False) -> None:
        super().__init__()
        if len(depths) != 4:
            raise ValueError(f"ResNet needs 4 stage depths, got {depths}")
        self.stem = ConvBN(3, width, kernel_size=7, stride=2)
        filters = (width, 2 * width, 4 * width, 8 * width)
        in_channels = (width, 4 * width, 8 * width, 16 * width)
        self.stage2, self.stage3, self.stage4, self.stage5 = (
            resnet_stage(in_channels[i], filters[i], depths[i], input_stride=2 ** (i + 1), stride=2,
                         activation=nn.ReLU, drop_path_keep=drop_path_keep)
            for i in range(4))
        self.channels: tuple[int, ...] = (width, 4 * width, 8 * width, 16 * width, 32 * width)
        self.strides: tuple[int, ...] = (2, 4, 8, 16, 32)
        self.checkpoint = checkpoint
        init_convolutions(self)

    def forward(self, x: Tensor) -> Features:
        stage1 = self.stem(x)
        stage2 = run_stage(self.stage2, stage1, enabled=self.checkpoint)   # each stage's first block activates
        stage3 = run_stage(self.stage3, stage2, enabled=self.checkpoint)   # its input
        stage4 = run_stage(self.stage4, stage3, enabled=self.checkpoint)
        stage5 = run_stage(self.stage5, stage4, enabled=self.checkpoint)
        return Features(stage1=stage1, stage2=stage2, stage3=stage3, stage4=stage4, stage5=stage5)


def resnet50(*, drop_path_keep: float = 1.0, checkpoint: bool = False) -> ResNet:
    """The kMaX-DeepLab R50 encoder: 23.51M parameters, endpoints (64, 256, 512, 1024, 2048) channels."""
    return ResNet(depths=(3, 4, 6, 3), width=64, drop_path_keep=drop_path_keep, checkpoint=checkpoint)


def resnet_tiny(*, width: int = 16, drop_path_keep: float = 1.0, checkpoint: bool = False) -> ResNet:
    """One block per stage, for fast tests and the synthetic-data demo presets: channels (w, 4w, .., 32w)."""
    return ResNet(depths=(1, 1, 1, 1), width=width, drop_path_keep=drop_path_keep, checkpoint=checkpoint)
