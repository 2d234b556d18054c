"""PolyMaX semantic head: K = C clusters with a fixed assignment, query i ↔ class i (paper §3.1).

With K = C the probability map P = softmax_K(mask_logits) *is* the per-pixel class distribution, and the
semantic map is argmax_K P (the paper's Fig. 2: "applying the argmax operation to find the maximum probability
semantic label"). The K queries are learned per class; the fixed matching replaces the Hungarian one.

What the class branch does with K = C. The paper keeps "the same losses from kMaX-DeepLab", and those need a
class distribution per cluster: the PQ-style class term trains it, and the PQ-style dice term of GT mask c is
weighted by p_c(class c). So each prediction keeps kMaX's class head unchanged — a linear layer to C + 1
logits (void last, with deeplab2's constant void bias), see :class:`~polymax.model.heads.classification.ClassHead`.
Under the fixed matching, query c is trained towards class c when class c is present in the image and towards
void when it is absent: the class branch learns class *presence*. It does not enter the semantic map (the
paper reads the map from P alone); it is returned as ``class_logits`` (B, C, C + 1) for the losses and for
inspection.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polymax.geometry import resize_to_input
from polymax.model.heads.classification import ClassHead
from polymax.structures import MaskPrediction, SegmentationOutput, TaskOutput


class SemanticClusterHead(nn.Module):
    """Task head (interface of :mod:`polymax.model.heads.classification`) for K = C semantic segmentation.

    Fills ``class_logits`` (B, K, C + 1) with one kMaX class head per prediction and checks that the trunk
    has exactly one query per class.
    """

    def __init__(self, *, num_classes: int, in_channels: int = 256, num_predictions: int = 7) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_head = ClassHead(num_classes=num_classes, in_channels=in_channels, num_predictions=num_predictions)

    def forward(self, layer: MaskPrediction, index: int) -> SegmentationOutput:
        clusters = layer.mask_logits.shape[1]
        if clusters != self.num_classes:
            raise ValueError(f"the PolyMaX semantic head needs one query per class (K = C): got K = {clusters} "
                             f"queries for C = {self.num_classes} classes; set kmax_decoder.num_queries to C")
        return self.class_head(layer, index)


def semantic_probabilities(prediction: TaskOutput) -> Tensor:
    """(B, C, h, w) per-pixel class probabilities: softmax over the K = C channels of ``mask_logits``.

    Works for the PolyMaX semantic model and for the per-pixel baseline (whose ``mask_logits`` are its class
    logits), at the model's resolution.
    """
    return torch.softmax(prediction.mask_logits.float(), dim=1)


def semantic_map(prediction: TaskOutput, input_size: tuple[int, int] | None = None) -> Tensor:
    """(B, H, W) int64 class ids = argmax over K of the probability map.

    Without ``input_size`` the map is at the model's (padded) resolution; with it, the logits are first resized
    onto the input image (bilinear with align_corners to the padded size, padding cropped), as the panoptic
    post-processing does.
    """
    logits = prediction.mask_logits.float()
    if input_size is not None:
        logits = resize_to_input(logits, tuple(input_size))
    return logits.argmax(dim=1)
