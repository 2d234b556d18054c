"""AiT's instance masks as tokens on the kMaX clusters: each cluster predicts a class (as kMaX), a box and the
n × n tokens of its mask crop over the frozen mask tokenizer's N codes; the final prediction's tokens are
soft-decoded into S × S crops, which inference pastes into the boxes.

For each prediction (the kMaX layers' auxiliary ones and the final one, each with its own weights), from the
cluster features F (B, K, E):

    class_logits = Linear(F) + void bias                                   (B, K, C + 1)   (kMaX's ClassHead)
    prior_k      = (mean x, mean y, √(12 var x + 1/w²), √(12 var y + 1/h²)) of cluster k's pixels (argmax over K)
    (cx, cy, w, h) = sigmoid(logit(prior) + MLP(F));  boxes = (cx − w/2, cy − h/2, cx + w/2, cy + h/2)   (B, K, 4)
    token_logits = MLP(F) reshaped                                          (B, K, N, n, n)
    masks        = tokenizer.decode_soft(token_logits)  (final prediction)  (B, K, S, S)    S = n · ratio

The prior (no gradient) is the box of a uniform region with the cluster's pixel moments, on the prediction's
grid (at stride s, within s/2 pixels of the input's frame): a kMaX cluster is already a mask, and its extent is
where its box starts (the MLP, near zero at initialisation, corrects it; an empty cluster starts at the centre,
half the image a side). Boxes are (x0, y0, x1, y1) pixel edges normalised by the network input
(``polymax.tokenizer.masks``). Training
keeps the raw soft decode (its mask loss clamps with a straight-through gradient); inference clamps to [0, 1] and
decodes soft (AiT) or hard (argmax codes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


@torch.no_grad()
def cluster_box_prior(mask_logits: Tensor) -> Tensor:
    """(B, K, h, w) mask logits → (B, K, 4) (cx, cy, w, h) in (0, 1) of the h × w grid: the centre of each
    cluster's pixels (argmax over K) and the extent of a uniform box with their variance (a rectangular cluster
    gives its own box); (0.5, 0.5, 0.5, 0.5) when empty."""
    height, width = mask_logits.shape[-2:]
    masks = F.one_hot(mask_logits.argmax(dim=1), mask_logits.shape[1]).permute(0, 3, 1, 2).float()   # (B, K, h, w)
    mass = masks.sum(dim=(2, 3))
    ys = (torch.arange(height, device=masks.device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=masks.device, dtype=torch.float32) + 0.5) / width
    moments = []
    for axis, coords in ((3, xs), (2, ys)):
        profile = masks.sum(dim=5 - axis)                                                   # (B, K, len)
        mean = (profile * coords).sum(dim=-1) / mass.clamp(min=1)
        variance = (profile * (coords - mean[..., None]).square()).sum(dim=-1) / mass.clamp(min=1)
        # n pixels in a row have variance (n² − 1) / 12 pixels²: the extent n comes back exactly for a rectangle.
        moments.append((mean, (12 * variance + 1.0 / coords.numel() ** 2).sqrt()))
    prior = torch.stack([moments[0][0], moments[1][0], moments[0][1], moments[1][1]], dim=-1)
    prior = torch.where(mass[..., None] > 0, prior, torch.full_like(prior, 0.5))
    return prior.clamp(1e-3, 1 - 1e-3)


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
        for box in self.boxes:                       # start near the clusters' own extent
            nn.init.trunc_normal_(box[-1].weight, std=0.01)
            nn.init.zeros_(box[-1].bias)
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
        prior = torch.logit(cluster_box_prior(layer.mask_logits.float()))
        centre, size = torch.sigmoid(prior + self.boxes[index](features)).split(2, dim=-1)
        boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
        tokens = self.tokens[index](features).view(batch, clusters, self.grid, self.grid, self.num_codes)
        tokens = tokens.permute(0, 1, 4, 2, 3)
        final = index == self.num_predictions - 1
        return InstanceTokensOutput(mask_logits=layer.mask_logits, pixel_features=layer.pixel_features,
                                    class_logits=self.classes.class_logits(layer.cluster_features, index),
                                    boxes=boxes, token_logits=tokens,
                                    masks=self.decode_masks(tokens) if final else None)
