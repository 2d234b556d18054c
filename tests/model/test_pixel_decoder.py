"""kMaX pixel decoder: output shapes at 32k+1 and other sizes, the os2 variant, gradients, structure, and the
parameter counts of spec §7."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from polymax.model.backbones import resnet_tiny
from polymax.model.pixel_decoder import KMaXPixelDecoder, ResizedFuse
from polymax.structures import Features, PixelFeatures

R50_CHANNELS = (64, 256, 512, 1024, 2048)
CONVNEXT_CHANNELS = {"tiny": (96, 96, 192, 384, 768), "base": (128, 128, 256, 512, 1024),
                     "large": (192, 192, 384, 768, 1536)}
OS2 = {"dims": (512, 256, 128, 64, 32), "num_blocks": (1, 5, 1, 1, 1),
       "block_types": ("axial", "axial", "bottleneck", "bottleneck", "bottleneck")}
TINY = {"dims": (64, 32, 16, 8), "num_heads": 4}


def _features(channels: tuple[int, ...], strides: tuple[int, ...], height: int, width: int, batch: int = 1):
    return Features(*(torch.randn(batch, c, math.ceil(height / s), math.ceil(width / s))
                      for c, s in zip(channels, strides)))


@pytest.mark.parametrize("size", [(65, 65), (64, 80)])
def test_tiny_decoder_output_shapes(size: tuple[int, int]) -> None:
    decoder = KMaXPixelDecoder(in_channels=(16, 64, 128, 256, 512), **TINY).eval()
    with torch.no_grad():
        out = decoder(_features((16, 64, 128, 256, 512), (2, 4, 8, 16, 32), *size, batch=2))
    assert isinstance(out, PixelFeatures)
    h, w = size
    for tensor, channels, stride in ((out.os32, 256, 32), (out.os16, 128, 16), (out.os8, 64, 8),
                                     (out.high_res, 32, 4)):
        assert tuple(tensor.shape) == (2, channels, math.ceil(h / stride), math.ceil(w / stride))
        assert torch.isfinite(tensor).all()
    assert decoder.out_channels == (256, 128, 64, 32)


def test_five_stage_decoder_outputs_at_the_stage1_stride() -> None:
    # Cityscapes variant: the extra stage fuses with stage1 (stride 2 for ResNets, 4 for ConvNeXt).
    decoder = KMaXPixelDecoder(in_channels=(16, 64, 128, 256, 512), dims=(64, 32, 16, 8, 4), num_blocks=(1, 2, 1, 1, 1),
                               block_types=("axial", "axial", "bottleneck", "bottleneck", "bottleneck"),
                               num_heads=4).eval()
    with torch.no_grad():
        out = decoder(_features((16, 64, 128, 256, 512), (2, 4, 8, 16, 32), 65, 65))
    assert tuple(out.high_res.shape) == (1, 16, 33, 33)
    assert tuple(out.os8.shape) == (1, 64, 9, 9)


def test_decoder_on_a_tiny_backbone_every_parameter_gets_a_gradient() -> None:
    backbone = resnet_tiny(width=16)
    decoder = KMaXPixelDecoder(in_channels=backbone.channels, **TINY).train()
    for bn in decoder.modules():       # γ = 0 on the last branch BN would block the upstream gradients
        if isinstance(bn, nn.BatchNorm2d):
            nn.init.uniform_(bn.weight, 0.5, 1.5)
    out = decoder(backbone(torch.rand(2, 3, 65, 65) * 2 - 1))
    loss = sum((t * torch.randn_like(t)).sum() for t in (out.os32, out.os16, out.os8, out.high_res))
    loss.backward()
    for key, parameter in decoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, key


def test_decoder_structure_follows_deeplab2() -> None:
    with torch.device("meta"):
        decoder = KMaXPixelDecoder(in_channels=R50_CHANNELS)
    # R50's stage5 already has 4·512 channels: no shortcut projection in the os32 stage; all other first
    # blocks project. Bottleneck 3×3 convs are dilated by 2 (deeplab2's atrous rate 32 / 16).
    assert decoder.stages[0].blocks[0].shortcut is None
    assert all(decoder.stages[i].blocks[0].shortcut is not None for i in (1, 2, 3))
    assert [len(stage.blocks) for stage in decoder.stages] == [1, 5, 1, 1]
    assert decoder.stages[2].blocks[0].conv2.conv.dilation == (2, 2)
    assert [fuse.project_decoder.conv.out_channels for fuse in decoder.fuses] == [256, 128, 64]
    assert all(not block.drop_path.keep_prob < 1 for stage in decoder.stages for block in stage.blocks)


def test_resized_fuse_skips_the_projection_when_channels_already_match() -> None:
    fuse = ResizedFuse(8, 4, 4).eval()
    assert fuse.project_skip is None and fuse.project_decoder is not None
    decoder, skip = torch.randn(1, 8, 3, 3), torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        out = fuse(decoder, skip)
        projected = fuse.project_decoder(nn.functional.gelu(decoder))
        # align_corners=True: the corners of the 3×3 map land exactly on the corners of the 5×5 map.
        torch.testing.assert_close(out[..., 0, 0], projected[..., 0, 0] + skip[..., 0, 0])
        torch.testing.assert_close(out[..., 4, 4], projected[..., 2, 2] + skip[..., 4, 4])
        torch.testing.assert_close(out[..., 2, 2], projected[..., 1, 1] + skip[..., 2, 2])


def test_decoder_rejects_inconsistent_stage_lists() -> None:
    with pytest.raises(ValueError, match="4 or 5 stages"):
        KMaXPixelDecoder(in_channels=R50_CHANNELS, dims=(512, 256, 128), num_blocks=(1, 5, 1),
                         block_types=("axial", "axial", "bottleneck"))
    with pytest.raises(ValueError, match="5 backbone endpoint"):
        KMaXPixelDecoder(in_channels=(256, 512, 1024, 2048))


def _millions(module: nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


@pytest.mark.parametrize(("name", "in_channels", "kwargs", "expected"), [
    ("r50_coco", R50_CHANNELS, {}, 21.15),
    ("convnext_tiny_small_coco", CONVNEXT_CHANNELS["tiny"], {}, 21.20),
    ("convnext_base_coco", CONVNEXT_CHANNELS["base"], {}, 22.03),
    ("convnext_large_coco", CONVNEXT_CHANNELS["large"], {}, 23.69),
    ("r50_cityscapes_os2", R50_CHANNELS, OS2, 21.18),
    ("convnext_tiny_cityscapes", CONVNEXT_CHANNELS["tiny"], OS2, 21.23),
])
def test_decoder_parameter_counts(name: str, in_channels, kwargs, expected: float) -> None:
    with torch.device("meta"):
        decoder = KMaXPixelDecoder(in_channels=in_channels, **kwargs)
    assert round(_millions(decoder), 2) == expected


def test_r50_decoder_parameter_breakdown() -> None:
    with torch.device("meta"):
        decoder = KMaXPixelDecoder(in_channels=R50_CHANNELS)
    # Spec §7 at its printed precision: os32 8.67M, os16 11.07M, os8 0.297M, os4 0.075M.
    stages = [_millions(stage) for stage in decoder.stages]
    assert [round(stages[0], 2), round(stages[1], 2), round(stages[2], 3), round(stages[3], 3)] == [
        8.67, 11.07, 0.297, 0.075]
    assert [round(_millions(fuse), 3) for fuse in decoder.fuses] == [0.787, 0.197, 0.049]
    assert sum(p.numel() for p in decoder.backbone_norms.parameters()) == 7680
