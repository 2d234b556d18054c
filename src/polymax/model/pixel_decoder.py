"""kMaX-DeepLab's enhanced pixel decoder (deeplab2 ``KMaXPixelDecoder``): Features → PixelFeatures.

Stages run from stride 32 up to stride 4 (or 2); stage i has filters f_i = dims[i] and outputs 4·f_i channels:

    x = LN_0(stage5)                                   LayerNorm over channels (ε 1e-6) on the raw endpoint
    for i in 0 .. n−2:
        x = Stage_i(x)                                 → decoder_stage{i+1}   (os32: 4·512, os16: 4·256, os8: 4·128)
        x = ResizedFuse_i(x, LN_{i+1}(endpoint))       → f_{i+1} channels at the endpoint's size
    x = Stage_{n−1}(x)                                 → decoder_output       (os4: 256, or os2: 128)

with endpoints stage5, stage4, stage3, stage2 (and stage1 for the 5-stage Cityscapes variant; stage1 is
stride 2 for ResNets but stride 4 for ConvNeXt, so that variant is effectively os4 on ConvNeXt).
Axial stages hold axial blocks, bottleneck stages bottleneck blocks, all with GELU and no drop path. Every
block activates its input, so each stage sees GELU(LN(stage5)) or GELU(fused sum). The bottleneck 3×3 convs
are dilated by 2: deeplab2 builds every decoder stage as a block group whose "original ResNet stride" is 32
with an output stride of 16, which turns into atrous rate 32 / 16 = 2.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from polymax.model.layers.blocks import AxialBlock, BottleneckBlock, ResidualStage, init_convolutions
from polymax.model.layers.conv import ConvBN
from polymax.model.layers.norms import ChannelLayerNorm
from polymax.structures import Features, PixelFeatures


class ResizedFuse(nn.Module):
    """Sum of two maps brought to the skip map's size and `out_channels` channels (not activated).

    Each input whose channel count differs from out_channels goes act → 1×1 conv → BN; then it is resized
    bilinearly with align_corners=True to the skip map's H×W. Inputs that already have out_channels are only
    resized (deeplab2 ``ResizedFuse``). decoder: (B, C_dec, h, w), skip: (B, C_skip, H, W) → (B, out, H, W).
    """

    def __init__(self, decoder_channels: int, skip_channels: int, out_channels: int, *,
                 activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.act = activation()
        self.project_decoder = ConvBN(decoder_channels, out_channels) if decoder_channels != out_channels else None
        self.project_skip = ConvBN(skip_channels, out_channels) if skip_channels != out_channels else None

    def _bring(self, x: Tensor, projection: nn.Module | None, size: tuple[int, int]) -> Tensor:
        if projection is not None:
            x = projection(self.act(x))
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return x

    def forward(self, decoder: Tensor, skip: Tensor) -> Tensor:
        size = (skip.shape[-2], skip.shape[-1])
        return self._bring(decoder, self.project_decoder, size) + self._bring(skip, self.project_skip, size)


def decoder_stage(in_channels: int, filters: int, num_blocks: int, *, block_type: str,
                  num_heads: int) -> ResidualStage:
    """num_blocks axial or bottleneck blocks at stride 1 with GELU; the first projects in_channels → 4·filters."""
    blocks: list[nn.Module] = []
    for index in range(num_blocks):
        block_in = in_channels if index == 0 else 4 * filters
        if block_type == "axial":
            blocks.append(AxialBlock(block_in, filters, activation=nn.GELU, num_heads=num_heads))
        elif block_type == "bottleneck":
            blocks.append(BottleneckBlock(block_in, filters, dilation=2, activation=nn.GELU))
        else:
            raise ValueError(f"unknown pixel-decoder block type {block_type!r} (use 'axial' or 'bottleneck')")
    return ResidualStage(blocks)


class KMaXPixelDecoder(nn.Module):
    """Features → PixelFeatures(os32, os16, os8, high_res). See the module docstring for the data flow.

    in_channels: the 5 backbone endpoint channels (stage1..stage5). dims / num_blocks / block_types: one entry
    per decoder stage from stride 32 upwards; 4 entries (COCO, ADE20K) or 5 (Cityscapes, adds an os2 stage).
    """

    def __init__(self, *, in_channels: tuple[int, ...], dims: tuple[int, ...] = (512, 256, 128, 64),
                 num_blocks: tuple[int, ...] = (1, 5, 1, 1),
                 block_types: tuple[str, ...] = ("axial", "axial", "bottleneck", "bottleneck"),
                 num_heads: int = 8) -> None:
        super().__init__()
        if len(in_channels) != 5:
            raise ValueError(f"in_channels needs the 5 backbone endpoint channels, got {in_channels}")
        num_stages = len(dims)
        if num_stages not in (4, 5) or len(num_blocks) != num_stages or len(block_types) != num_stages:
            raise ValueError(f"dims {dims}, num_blocks {num_blocks}, block_types {block_types}: "
                             "need 4 or 5 stages, the same number in each")
        self.num_stages = num_stages
        # Endpoint feeding stage i: stage5, stage4, stage3, stage2, stage1.
        self.endpoint_names = tuple(f"stage{5 - i}" for i in range(num_stages))
        endpoint_channels = [in_channels[4 - i] for i in range(num_stages)]
        self.backbone_norms = nn.ModuleList(ChannelLayerNorm(c) for c in endpoint_channels)
        self.stages = nn.ModuleList()
        self.fuses = nn.ModuleList()
        stage_in = endpoint_channels[0]
        for i in range(num_stages):
            self.stages.append(decoder_stage(stage_in, dims[i], num_blocks[i], block_type=block_types[i],
                                             num_heads=num_heads))
            if i + 1 < num_stages:
                self.fuses.append(ResizedFuse(4 * dims[i], endpoint_channels[i + 1], dims[i + 1]))
                stage_in = dims[i + 1]
        self.out_channels: tuple[int, ...] = tuple(4 * d for d in dims)
        init_convolutions(self)

    def forward(self, features: Features) -> PixelFeatures:
        x = self.backbone_norms[0](getattr(features, self.endpoint_names[0]))
        decoder_stages = []
        for i in range(self.num_stages - 1):
            x = self.stages[i](x)
            decoder_stages.append(x)
            skip = self.backbone_norms[i + 1](getattr(features, self.endpoint_names[i + 1]))
            x = self.fuses[i](x, skip)
        high_res = self.stages[-1](x)
        return PixelFeatures(os32=decoder_stages[0], os16=decoder_stages[1], os8=decoder_stages[2],
                             high_res=high_res)
