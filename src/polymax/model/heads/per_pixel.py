"""Per-pixel prediction heads of the DeepLabv3+ baseline (paper §4.2–4.3: "pixel-classification prediction head
for semantic segmentation, and pixel-regression prediction head for depth estimation and surface normal").

Each head is a 1×1 convolution (with bias) on the decoder's per-pixel features (B, Cin, h, w) followed by the
task's output mapping, and returns the task's :class:`~polymax.structures.TaskOutput` whose common fields mean:

* ``mask_logits`` — the head's raw per-pixel outputs before the output mapping: the class logits (B, C, h, w)
  for semantic segmentation (so that softmax / argmax over dim 1 — the PolyMaX K = C pipeline, e.g.
  :func:`polymax.model.heads.semantic.semantic_map` — gives the class, unchanged); the depth logit (B, 1, h, w);
  the un-normalised normal (B, 3, h, w). There are no clusters: for depth / normals these are *not* meant to be
  softmaxed.
* ``pixel_features`` — the decoder's per-pixel features, L2-normalised over channels (B, Cin, h, w), for
  inspection (nothing in the losses reads them).

``aux`` stays empty (the baseline has no deep supervision) and ``class_logits`` / ``cluster_*`` are None.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polymax.model.cluster_decoder.mask_head import l2_normalise
from polymax.structures import DepthOutput, NormalsOutput, SegmentationOutput


class PerPixelClassHead(nn.Module):
    """(B, Cin, h, w) → class logits (B, C, h, w) in ``mask_logits``."""

    def __init__(self, *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, features: Tensor) -> SegmentationOutput:
        return SegmentationOutput(mask_logits=self.classifier(features), pixel_features=l2_normalise(features, dim=1))


class PerPixelDepthHead(nn.Module):
    """(B, Cin, h, w) → depth = d_min + (d_max − d_min) · sigmoid(logit), (B, 1, h, w) metres.

    The same bounded mapping as the PolyMaX bin centres (and deeplab2 / ViP-DeepLab's per-pixel depth head).
    """

    def __init__(self, *, in_channels: int, min_depth: float, max_depth: float) -> None:
        super().__init__()
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.regressor = nn.Conv2d(in_channels, 1, 1)

    def forward(self, features: Tensor) -> DepthOutput:
        logit = self.regressor(features)
        depth = self.min_depth + (self.max_depth - self.min_depth) * torch.sigmoid(logit.float())
        return DepthOutput(mask_logits=logit, pixel_features=l2_normalise(features, dim=1), depth=depth)


class PerPixelNormalsHead(nn.Module):
    """(B, Cin, h, w) → unit normals (B, 3, h, w) (L2-normalised 3-channel regression)."""

    def __init__(self, *, in_channels: int) -> None:
        super().__init__()
        self.regressor = nn.Conv2d(in_channels, 3, 1)

    def forward(self, features: Tensor) -> NormalsOutput:
        raw = self.regressor(features)
        return NormalsOutput(mask_logits=raw, pixel_features=l2_normalise(features, dim=1),
                             normals=l2_normalise(raw.float(), dim=1))
