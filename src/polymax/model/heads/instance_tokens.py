"""AiT's instance masks as tokens on the kMaX clusters: each cluster predicts a class (as kMaX), a box and the
n × n tokens of its mask crop over the frozen mask tokenizer's N codes; the final prediction's tokens are
soft-decoded into S × S crops, which inference pastes into the boxes.

For each prediction (the kMaX layers' auxiliary ones and the final one, each with its own weights), from the
cluster features F (B, K, E):

    class_logits = Linear(F) + void bias                                   (B, K, C + 1)   (kMaX's ClassHead)
    (cx, cy, w, h) = sigmoid(MLP(F));  boxes = (cx − w/2, cy − h/2, cx + w/2, cy + h/2)   (B, K, 4) in [0, 1]
    token_logits = MLP(F) reshaped                                          (B, K, N, n, n)
    masks        = tokenizer.decode_soft(token_logits)  (final prediction)  (B, K, S, S)    S = n · ratio

Boxes are (x0, y0, x1, y1) pixel edges normalised by the network input (``polymax.tokenizer.masks``). Training
keeps the raw soft decode (its mask loss clamps with a straight-through gradient); inference clamps to [0, 1] and
decodes soft (AiT) or hard (argmax codes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from polymax.model.heads.classification import ClassHead
from polymax.structures import MaskPrediction, SegmentationOutput


@dataclass
class InstanceTokensOutput(SegmentationOutput):
    """SegmentationOutput plus boxes: (B, K, 4) normalised (x0, y0, x1, y1); token_logits: (B, K, N, n, n) over
    the tokenizer's N codes; masks: (B, K, S, S) the decoded crops (None for the auxiliary predictions)."""

    boxes: Tensor | None = None
    token_logits: Tensor | None = None
    masks: Tensor | None = None


def mlp(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_channels, hidden), nn.GELU(), nn.Linear(hidden, out_channels))


class InstanceTokenHead(nn.Module):
    """Task head: per-cluster class, box and token logits (every prediction) and decoded crops (the final one).

    Args:
        num_classes: C (class logits have C + 1 channels, void last). in_channels: E of ``cluster_features``.
        num_predictions: the kMaX layers' auxiliary predictions and the final one.
        tokenizer: the frozen mask VQ-VAE (weights as buffers): ``ratio``, ``config.num_codes`` / ``image_size``,
            ``decode`` and ``decode_soft``. hidden: width of the box and token MLPs. decode: 'soft' or 'hard'.
    """

    def __init__(self, *, num_classes: int, in_channels: int, num_predictions: int, tokenizer: nn.Module,
                 hidden: int = 256, decode: str = "soft") -> None:
        super().__init__()
        if decode not in ("soft", "hard"):
            raise ValueError(f"token_decode must be 'soft' or 'hard', got {decode!r}")
        self.decode, self.tokenizer = decode, tokenizer
        self.num_codes = tokenizer.config.num_codes
        self.grid = tokenizer.config.image_size // tokenizer.ratio
        self.classes = ClassHead(num_classes=num_classes, in_channels=in_channels, num_predictions=num_predictions)
        self.boxes = nn.ModuleList(mlp(in_channels, hidden, 4) for _ in range(num_predictions))
        self.tokens = nn.ModuleList(mlp(in_channels, hidden, self.grid * self.grid * self.num_codes)
                                    for _ in range(num_predictions))
        self.num_predictions = num_predictions

    def train(self, mode: bool = True) -> InstanceTokenHead:
        super().train(mode)
        self.tokenizer.eval()                       # frozen: its EMA codebook never updates
        return self

    def decode_masks(self, token_logits: Tensor) -> Tensor:
        """(B, K, N, n, n) → (B, K, S, S) crops (soft in training; clamped to [0, 1] at inference)."""
        batch, clusters = token_logits.shape[:2]
        flat = token_logits.flatten(0, 1)
        if self.training or self.decode == "soft":
            crops = self.tokenizer.decode_soft(flat)
        else:
            crops = self.tokenizer.decode(flat.argmax(dim=1))
        crops = crops.view(batch, clusters, *crops.shape[-2:])
        return crops if self.training else crops.clamp(0.0, 1.0)

    def forward(self, layer: MaskPrediction, index: int) -> InstanceTokensOutput:
        features = layer.cluster_features.float()
        batch, clusters = features.shape[:2]
        centre, size = torch.sigmoid(self.boxes[index](features)).split(2, dim=-1)
        boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
        tokens = self.tokens[index](features).view(batch, clusters, self.grid, self.grid, self.num_codes)
        tokens = tokens.permute(0, 1, 4, 2, 3)
        final = index == self.num_predictions - 1
        return InstanceTokensOutput(mask_logits=layer.mask_logits, pixel_features=layer.pixel_features,
                                    class_logits=self.classes.class_logits(layer.cluster_features, index),
                                    boxes=boxes, token_logits=tokens,
                                    masks=self.decode_masks(tokens) if final else None)
