"""Per-cluster value MLPs shared by the PolyMaX depth and surface-normal heads.

PolyMaX (paper §3.1–3.2) maps every cluster centre Q_k (its task feature, (B, K, E)) through an MLP to a
D_T-dimensional value: a bin depth (D_T = 1) or a normal direction (D_T = 3). The per-pixel answer is the
probability-weighted combination Σ_k P_k · value_k with P = softmax over K of the mask logits.

:class:`ClusterMLP` is that MLP (``layers`` linear layers, GELU between them, hidden width = E);
:func:`mix_over_clusters` is the combination, written as a broadcast multiply-and-sum so that it stays in
float32 under autocast (an einsum would be cast to bf16, i.e. ~2 cm steps at 5 m).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ClusterMLP(nn.Module):
    """(B, K, E) → (B, K, out_channels): ``layers`` linear layers with GELU in between (no activation last)."""

    def __init__(self, *, in_channels: int, out_channels: int, layers: int = 2) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"an MLP needs at least one layer, got layers={layers}")
        blocks: list[nn.Module] = []
        for _ in range(layers - 1):
            blocks += [nn.Linear(in_channels, in_channels), nn.GELU()]
        blocks.append(nn.Linear(in_channels, out_channels))
        self.net = nn.Sequential(*blocks)

    def forward(self, cluster_features: Tensor) -> Tensor:
        return self.net(cluster_features)


def mix_over_clusters(mask_logits: Tensor, values: Tensor) -> Tensor:
    """Σ_k softmax_K(mask_logits)_k · values_k.

    mask_logits: (B, K, h, w); values: (B, K, V). Returns (B, V, h, w), computed in float32.
    """
    probabilities = torch.softmax(mask_logits.float(), dim=1)            # (B, K, h, w)
    values = values.float()
    channels = [(probabilities * values[:, :, v, None, None]).sum(dim=1) for v in range(values.shape[-1])]
    return torch.stack(channels, dim=1)                                  # (B, V, h, w)
