"""Typed values passed between the stages of the model.

image → backbone → :class:`Features` → pixel decoder → :class:`PixelFeatures`
      → kMaX decoder → :class:`ClusterCentres` (+ one :class:`MaskPrediction` per kMaX layer)
      → mask head → :class:`MaskPrediction` → task head → :class:`Prediction`

Shapes use B = batch, K = clusters (queries), C = classes incl. the void channel,
h, w = the prediction's spatial size (stride 4, or 2 for the Cityscapes R50 / MaX-S models).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor


@dataclass
class Features:
    """Backbone endpoints, un-activated, as deeplab2's ``stage1`` .. ``stage5``.

    stage1: (B, C1, H/s1, W/s1) stem output; s1 = 2 for ResNet / MaX-S, 4 for ConvNeXt.
    stage2: (B, C2, H/4, W/4); stage3: (B, C3, H/8, W/8); stage4: (B, C4, H/16, W/16);
    stage5: (B, C5, H/32, W/32). Sizes follow the 32k+1 rule: (H - 1) / s + 1.
    """

    stage1: Tensor
    stage2: Tensor
    stage3: Tensor
    stage4: Tensor
    stage5: Tensor


@dataclass
class PixelFeatures:
    """Pixel-decoder outputs (deeplab2 ``decoder_stage1..3`` and ``decoder_output``).

    os32: (B, 2048, H/32, W/32), os16: (B, 1024, H/16, W/16), os8: (B, 512, H/8, W/8) — the
    memories the kMaX layers read; high_res: (B, D_hr, h, w) the final per-pixel embedding
    (D_hr = 256 at stride 4, 128 at stride 2).
    """

    os32: Tensor
    os16: Tensor
    os8: Tensor
    high_res: Tensor


@dataclass
class MaskPrediction:
    """What a mask head (final or one kMaX layer's auxiliary head) predicts.

    mask_logits: (B, K, h, w) logits before the softmax over K.
    pixel_features: (B, D, h, w) L2-normalised pixel embeddings (D = 128 in kMaX).
    cluster_features: (B, K, E) the per-cluster features task heads turn into values
        (class logits, bin depths, normals); E = 256 in kMaX.
    """

    mask_logits: Tensor
    pixel_features: Tensor
    cluster_features: Tensor


@dataclass
class ClusterCentres:
    """kMaX decoder output.

    class_embeddings, mask_embeddings: (B, K, E) the projected final cluster centres.
    layers: one MaskPrediction per kMaX layer, computed on that layer's *input* centres at the
        layer's own stride (these drive the hard k-means assignment and deep supervision).
    """

    class_embeddings: Tensor
    mask_embeddings: Tensor
    layers: list[MaskPrediction]


@dataclass
class Prediction:
    """Model output. Optional fields are set by the task head that produces them.

    mask_logits: (B, K, h, w) final mask logits (before softmax over K).
    pixel_features: (B, D, h, w) L2-normalised pixel embeddings.
    class_logits: (B, K, C) per-cluster class logits incl. void (panoptic / semantic tasks).
    depth: (B, 1, h, w) metres; cluster_depth: (B, K) per-cluster bin centres in metres.
    normals: (B, 3, h, w) unit vectors; cluster_normals: (B, K, 3) per-cluster unit vectors.
    semantic_logits: (B, C_sem, h_s, w_s) training-only auxiliary semantic head.
    aux: the same fields for each kMaX layer (deep supervision), layer order.
    """

    mask_logits: Tensor
    pixel_features: Tensor
    class_logits: Tensor | None = None
    depth: Tensor | None = None
    cluster_depth: Tensor | None = None
    normals: Tensor | None = None
    cluster_normals: Tensor | None = None
    semantic_logits: Tensor | None = None
    aux: list[Prediction] = field(default_factory=list)

    @property
    def probabilities(self) -> Tensor:
        """P = softmax over the K clusters, (B, K, h, w)."""
        return torch.softmax(self.mask_logits, dim=1)

    def tensors(self) -> dict[str, Tensor]:
        """The non-empty tensor fields (for export and inspection), aux excluded."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), Tensor)}


@dataclass
class Targets:
    """Ground truth for one batch, at input resolution (B, H, W) unless noted.

    semantic: int64 class ids 0..C-1, ``ignore_label`` for void.
    panoptic: int64 ids = class * label_divisor + instance (instance 0 for stuff, class = ignore for void).
    depth: float32 metres, 0 = invalid.  normals: (B, 3, H, W) float32, all-zero = invalid.
    thing_mask: bool, True where the class is a thing. crowd: bool, crowd regions (COCO iscrowd).
    semantic_weight: float32 per-pixel weights for the auxiliary semantic loss.
    Any field may be None when the data set has no such label.
    """

    semantic: Tensor | None = None
    panoptic: Tensor | None = None
    depth: Tensor | None = None
    normals: Tensor | None = None
    crowd: Tensor | None = None
    semantic_weight: Tensor | None = None
