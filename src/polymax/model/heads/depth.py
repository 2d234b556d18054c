"""PolyMaX depth head: K adaptive depth bins, one per cluster centre (paper §3.1, Fig. 3).

For each prediction (the six kMaX layers' auxiliary ones and the final one, each with its own MLP):

    cluster features (B, K, E) → MLP → t_k (B, K)
    bin centre  b_k = d_min + (d_max − d_min) · sigmoid(t_k)          (metres, inside (d_min, d_max))
    depth(x)    = Σ_k softmax_K(mask_logits)_k(x) · b_k               (B, 1, h, w)

Why the sigmoid scaling (rather than softplus or AdaBins' softmax widths + cumulative sum):
* it keeps every bin inside the data set's range, so the depth (a convex combination of bins) is always a
  positive, finite number inside [d_min, d_max]: log-depth losses are defined from the first step and the
  test-time clamp is a no-op;
* bins stay independent of each other. kMaX clusters are unordered sets; AdaBins' widths + cumsum imposes an
  order on the queries and couples every bin to every other through the normalisation;
* it is the bounded activation the paper's code base already uses for depth (deeplab2 / ViP-DeepLab's depth
  head: min + sigmoid · (max − min)).
The cost is a uniform (metre-linear) parameterisation: saturated bins near d_min / d_max learn slowly. The
MLP's last layer keeps PyTorch's default initialisation so that the initial bins spread over the range
(near-identical bins would make the depth insensitive to the mask logits at the start).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polymax.model.heads.cluster_values import ClusterMLP, mix_over_clusters
from polymax.structures import DepthOutput, MaskPrediction


class DepthHead(nn.Module):
    """Task head (interface of :mod:`polymax.model.heads.classification`): fills ``depth`` and ``cluster_depth``.

    Args:
        in_channels: E, the width of ``MaskPrediction.cluster_features``.
        num_predictions: one MLP per prediction (6 auxiliary + 1 final in the standard models).
        min_depth, max_depth: the bin range in metres (0 < min_depth < max_depth).
        mlp_layers: linear layers in each MLP.
    """

    def __init__(self, *, in_channels: int = 256, num_predictions: int = 7, min_depth: float, max_depth: float,
                 mlp_layers: int = 2) -> None:
        super().__init__()
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.mlps = nn.ModuleList(ClusterMLP(in_channels=in_channels, out_channels=1, layers=mlp_layers)
                                  for _ in range(num_predictions))

    def bin_centres(self, cluster_features: Tensor, index: int) -> Tensor:
        """(B, K, E) → (B, K) bin centres in metres, in (min_depth, max_depth)."""
        t = self.mlps[index](cluster_features).squeeze(-1).float()
        return self.min_depth + (self.max_depth - self.min_depth) * torch.sigmoid(t)

    def forward(self, layer: MaskPrediction, index: int) -> DepthOutput:
        bins = self.bin_centres(layer.cluster_features, index)             # (B, K)
        depth = mix_over_clusters(layer.mask_logits, bins[..., None])       # (B, 1, h, w)
        return DepthOutput(mask_logits=layer.mask_logits, pixel_features=layer.pixel_features,
                           depth=depth, cluster_depth=bins)
