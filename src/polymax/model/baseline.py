"""The per-pixel DeepLabv3+ baseline of the PolyMaX paper (Tab. 2, 3 and the scalability study, §4.3).

    images (B, 3, H, W) RGB 0..255, any H, W
      → the kMaX input contract (x/127.5 − 1, pad bottom/right to 32k+1; :func:`polymax.model.meta_arch.preprocess`)
      → backbone (the same backbones as kMaX) → Features
      → DeepLabv3+ decoder: ASPP on stage5 (os16: ResNet stage5 atrous, see
        :func:`atrous_last_stage`; os32 with ``baseline_output_stride=32``) → upsample to stage2 (os4) → concat
        with the activated stage2
        projected to 48 channels → two 3×3 conv-BN-GELU (256)                     (B, 256, h, w), h = (H_pad−1)/4+1
      → per-pixel head (:mod:`polymax.model.heads.per_pixel`): class logits / bounded depth / unit normals

The ASPP is kMaX's (rates 6/12/18, DeepLabv3+'s rates at os16, image pooling, GELU, dropout 0.1; from
:mod:`polymax.model.heads.semantic_decoder`); the single low-level fusion with a 48-channel projection and the two
3×3 convolutions are DeepLabv3+'s decoder. The output lives at the padded model resolution at stride 4, like
the kMaX model's, so the same losses, post-processing and test-time helpers apply. Runs have no ``aux``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.model.heads.semantic_decoder import ASPP
from polymax.model.layers.conv import ConvBN
from polymax.model.meta_arch import preprocess, resolve_tasks
from polymax.structures import Features, ModelOutput, TaskRun


class DeepLabV3PlusDecoder(nn.Module):
    """Features → (B, channels, H/4, W/4).

    stage2_channels, stage5_channels: the backbone's endpoint widths; endpoint_activation: 'relu' or 'gelu', the
    activation that turns the backbone's un-activated stage2 endpoint into a feature map (as kMaX's semantic
    decoder does). low_level_channels: width of the projected stage2 skip (48 in DeepLabv3+).
    """

    def __init__(self, *, stage2_channels: int, stage5_channels: int, endpoint_activation: str,
                 channels: int = 256, low_level_channels: int = 48) -> None:
        super().__init__()
        if endpoint_activation not in ("relu", "gelu"):
            raise ValueError(f"endpoint_activation must be 'relu' or 'gelu', got {endpoint_activation!r}")
        self.endpoint_activation = endpoint_activation
        self.aspp = ASPP(in_channels=stage5_channels, channels=channels)
        self.low_level = ConvBN(stage2_channels, low_level_channels, activation=nn.GELU())
        self.fuse = nn.Sequential(
            ConvBN(channels + low_level_channels, channels, kernel_size=3, activation=nn.GELU()),
            ConvBN(channels, channels, kernel_size=3, activation=nn.GELU()))

    def forward(self, features: Features) -> Tensor:
        act = F.relu if self.endpoint_activation == "relu" else F.gelu
        skip = self.low_level(act(features.stage2))                               # (B, 48, h, w)
        context = F.interpolate(self.aspp(features.stage5), size=skip.shape[2:], mode="bilinear",
                                align_corners=True)                               # (B, 256, h, w)
        return self.fuse(torch.cat([context, skip], dim=1))


class DeepLabV3Plus(nn.Module):
    """The baseline model. Submodules: ``backbone``, ``decoder`` and one per-pixel head per task in ``heads``;
    ``config`` as in :class:`~polymax.model.meta_arch.KMaX`."""

    def __init__(self, *, backbone: nn.Module, decoder: nn.Module, heads: dict[str, nn.Module], config=None) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.heads = nn.ModuleDict(heads)
        self.config = config

    preprocess = staticmethod(preprocess)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.heads)

    def forward(self, images: Tensor, task: str | Sequence[str] | None = None) -> ModelOutput:
        """ModelOutput at the padded model resolution (stride 4); no auxiliary outputs."""
        tasks = resolve_tasks(self.tasks, task)
        features = self.decoder(self.backbone(self.preprocess(images)))
        return ModelOutput({task: TaskRun(task=task, final=self.heads[task](features)) for task in tasks})


def atrous_last_stage(backbone: nn.Module, *, name: str = "") -> None:
    """Output stride 16 for a deeplab2 ResNet, in place: stage5 keeps its weights but its first block no
    longer subsamples (3×3 and shortcut at stride 1) and every stage5 3×3 convolution becomes atrous with rate 2
    (padding 2), so stage5 sees the same receptive field at twice the resolution (DeepLabv3's atrous block4).
    Backbones without bottleneck stages (ConvNeXt, axial) are refused with one line."""
    from polymax.errors import UserError
    from polymax.model.layers.blocks import BottleneckBlock

    blocks = getattr(getattr(backbone, "stage5", None), "blocks", None)
    if blocks is None or not all(isinstance(block, BottleneckBlock) for block in blocks):
        raise UserError(f"the output-stride-16 DeepLabv3+ baseline needs a ResNet backbone, not {name or backbone}; "
                        "use baseline_output_stride=32")
    for index, block in enumerate(blocks):
        conv = block.conv2.conv
        conv.stride, conv.dilation, conv.padding = (1, 1), (2, 2), (2, 2)
        if index == 0:
            block.stride = 1
            if block.shortcut is not None:
                block.shortcut.conv.stride = (1, 1)
    if hasattr(backbone, "strides"):
        backbone.strides = (*tuple(backbone.strides)[:4], backbone.strides[3])
