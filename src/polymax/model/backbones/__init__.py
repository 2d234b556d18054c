"""Backbones: image (B, 3, H, W) scaled to [-1, 1] → :class:`polymax.structures.Features` (stage1..stage5).

Each backbone exposes ``channels`` (5 endpoint channel counts) and ``strides`` (5 endpoint strides).
"""

from polymax.model.backbones.axial_resnet import AxialResNet, axial_resnet50
from polymax.model.backbones.convnext import (
    ConvNeXt,
    convnext_base,
    convnext_large,
    convnext_small,
    convnext_tiny,
    load_imagenet_weights,
)
from polymax.model.backbones.resnet import ResNet, resnet50, resnet_tiny

__all__ = [
    "AxialResNet",
    "ConvNeXt",
    "ResNet",
    "axial_resnet50",
    "convnext_base",
    "convnext_large",
    "convnext_small",
    "convnext_tiny",
    "load_imagenet_weights",
    "resnet50",
    "resnet_tiny",
]
