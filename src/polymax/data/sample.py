"""The sample structure every data set returns (before augmentation, at the original resolution)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Sample:
    """One image and whichever labels its data set has.

    image: uint8 (3, H, W) RGB.
    semantic: int64 (H, W), classes 0..C-1 in the data set's contiguous order, ignore label (255) = void.
    panoptic: int64 (H, W), class * label_divisor + instance (instance 0 for stuff; class = ignore for void).
    depth: float32 (H, W) metres, 0 = invalid (for NYUD-v2 evaluation: the raw depth).
    normals: float32 (3, H, W) camera-frame unit normals, all-zero = invalid.
    crowd: bool (H, W) crowd regions (COCO iscrowd), excluded from matching and evaluation.
    name: identifier for messages and output files.
    """

    image: Tensor
    semantic: Tensor | None = None
    panoptic: Tensor | None = None
    depth: Tensor | None = None
    normals: Tensor | None = None
    crowd: Tensor | None = None
    name: str = ""
