"""PolyMaX surface-normal head: K "sphere segments", one unit 3-vector per cluster centre (paper §3.2, Fig. 4).

For each prediction (six auxiliary + final, each with its own MLP):

    cluster features (B, K, E) → MLP → (B, K, 3) → L2-normalise → v_k   (cluster_normals, unit)
    normal(x) = normalise(Σ_k softmax_K(mask_logits)_k(x) · v_k)         (B, 3, h, w), unit

The mixture of unit vectors is shorter than 1 wherever the probabilities are spread over clusters pointing
in different directions, so it is renormalised (the paper's "additional L2 normalization"). The axis
convention is the data set's (x right, y down, z forward for NYUv2 and the synthetic rooms).
"""

from __future__ import annotations

from torch import Tensor, nn

from polymax.model.cluster_decoder.mask_head import l2_normalise
from polymax.model.heads.cluster_values import ClusterMLP, mix_over_clusters
from polymax.structures import MaskPrediction, NormalsOutput


class NormalsHead(nn.Module):
    """Task head (interface of :mod:`polymax.model.heads.classification`): fills ``normals`` and
    ``cluster_normals``.

    Args:
        in_channels: E, the width of ``MaskPrediction.cluster_features``.
        num_predictions: one MLP per prediction (6 auxiliary + 1 final in the standard models).
        mlp_layers: linear layers in each MLP.
    """

    def __init__(self, *, in_channels: int = 256, num_predictions: int = 7, mlp_layers: int = 2) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(ClusterMLP(in_channels=in_channels, out_channels=3, layers=mlp_layers)
                                  for _ in range(num_predictions))

    def cluster_normals(self, cluster_features: Tensor, index: int) -> Tensor:
        """(B, K, E) → (B, K, 3) unit vectors."""
        return l2_normalise(self.mlps[index](cluster_features).float(), dim=-1)

    def forward(self, layer: MaskPrediction, index: int) -> NormalsOutput:
        directions = self.cluster_normals(layer.cluster_features, index)                # (B, K, 3)
        normals = l2_normalise(mix_over_clusters(layer.mask_logits, directions), dim=1)  # (B, 3, h, w)
        return NormalsOutput(mask_logits=layer.mask_logits, pixel_features=layer.pixel_features,
                             normals=normals, cluster_normals=directions)
