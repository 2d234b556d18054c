"""The kMaX class head: per-cluster class logits for the panoptic task.

Task-head interface (depth / normal heads follow it): an ``nn.Module`` with
``forward(layer: MaskPrediction, index: int) -> TaskOutput``. ``index`` 0..L−1 selects the weights of
kMaX layer i's auxiliary prediction, index L the final prediction; every prediction owns its weights
(deeplab2 gives each of the 6 auxiliary predictors and the final predictor its own class head).
The head copies ``mask_logits`` and ``pixel_features`` and fills its own fields.

Class channels are our contiguous class ids 0..C−1 followed by one void channel (C_out = C + 1).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from polymax.structures import MaskPrediction, SegmentationOutput


def void_bias(num_logits: int) -> float:
    """The constant deeplab2 adds to the void logit at every forward: log((C_out − 1) · 0.9 / 0.1).

    It makes the initial void probability ≈ 0.9 under uniform other logits; it is not a parameter.
    """
    return math.log((num_logits - 1) * 0.9 / 0.1)


class ClassHead(nn.Module):
    """Linear (with bias) per prediction: cluster features (B, K, E) → class logits (B, K, C + 1)."""

    def __init__(self, *, num_classes: int, in_channels: int = 256, num_predictions: int = 7) -> None:
        super().__init__()
        self.num_logits = num_classes + 1
        self.classifiers = nn.ModuleList(nn.Linear(in_channels, self.num_logits) for _ in range(num_predictions))
        for layer in self.classifiers:
            nn.init.trunc_normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        self.void_bias = void_bias(self.num_logits)

    def class_logits(self, cluster_features: Tensor, index: int) -> Tensor:
        logits = self.classifiers[index](cluster_features)
        # Out-of-place add keeps autograd simple: only the void column is shifted.
        shift = logits.new_zeros(self.num_logits)
        shift[-1] = self.void_bias
        return logits + shift

    def forward(self, layer: MaskPrediction, index: int) -> SegmentationOutput:
        return SegmentationOutput(mask_logits=layer.mask_logits, pixel_features=layer.pixel_features,
                          class_logits=self.class_logits(layer.cluster_features, index))
