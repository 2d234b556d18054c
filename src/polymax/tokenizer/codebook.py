"""The EMA codebook of the VQ-VAE: nearest-code quantisation, the exponential-moving-average code update, the
commitment loss, and the two fixes for codebook collapse (data-dependent initialisation, dead-code restart).

Shapes: z (B, D, h, w) encoder outputs; codes (N, D); indices (B, h, w) int64.

The update (AiT's ``VectorQuantizerEMA``, training mode, one step with one-hot assignments A (M, N), M = B·h·w):

    size ← decay · size + (1 − decay) · Σ_m A_m            (N,)     then Laplace smoothing, total kept
    w    ← decay · w    + (1 − decay) · Aᵀ z_flat           (N, D)
    codes = w / size

The codes are buffers, not parameters: no optimiser touches them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Quantized:
    """quantized: (B, D, h, w) the codes at the indices, straight-through (forward value = codes, gradient
    flows into z); indices: (B, h, w) int64; commitment: () commitment · mse(codes, z), gradient into z only;
    perplexity: () exp(entropy) of the code usage of the batch."""

    quantized: Tensor
    indices: Tensor
    commitment: Tensor
    perplexity: Tensor


class EMACodebook(nn.Module):
    """N codes of width D, updated by EMA in training mode.

    Args:
        num_codes, code_dim: N and D.
        decay: EMA decay (0.99). commitment: weight of the encoder's commitment loss (0.25). epsilon: Laplace
        smoothing of the cluster sizes (1e-5).
    """

    def __init__(self, *, num_codes: int, code_dim: int, decay: float = 0.99, commitment: float = 0.25,
                 epsilon: float = 1e-5) -> None:
        super().__init__()
        self.num_codes, self.code_dim = num_codes, code_dim
        self.decay, self.commitment, self.epsilon = decay, commitment, epsilon
        # AiT's initialisation (normal codes, zero sizes); training replaces it with init_from_data.
        self.register_buffer("embedding", torch.randn(num_codes, code_dim))
        self.register_buffer("ema_size", torch.zeros(num_codes))
        self.register_buffer("ema_weight", torch.randn(num_codes, code_dim))

    def distances(self, z: Tensor) -> Tensor:
        """(B, D, h, w) → (B·h·w, N) squared distances ‖z‖² + ‖e‖² − 2 z·e, rows in (b, i, j) order."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        return (flat.pow(2).sum(dim=1, keepdim=True) + self.embedding.pow(2).sum(dim=1)
                - 2 * flat @ self.embedding.t())

    def nearest(self, z: Tensor) -> Tensor:
        """(B, D, h, w) → (B, h, w) index of the nearest code."""
        batch, _, height, width = z.shape
        return self.distances(z).argmin(dim=1).view(batch, height, width)

    def lookup(self, indices: Tensor) -> Tensor:
        """(B, h, w) int64 → (B, D, h, w) codes."""
        return self.embedding[indices].permute(0, 3, 1, 2).contiguous()

    def mix(self, probabilities: Tensor) -> Tensor:
        """(B, N, h, w) code probabilities → (B, D, h, w) the probability-weighted codes (a soft token)."""
        return torch.einsum("bnhw,nd->bdhw", probabilities, self.embedding.to(probabilities.dtype))

    def forward(self, z: Tensor) -> Quantized:
        indices = self.nearest(z)
        codes = self.lookup(indices)                     # the codes before this step's update
        one_hot = F.one_hot(indices.reshape(-1), self.num_codes).to(z.dtype)     # (M, N)
        if self.training:
            self._ema_update(z.detach(), one_hot)
        commitment = self.commitment * F.mse_loss(codes.detach(), z)
        usage = one_hot.mean(dim=0)
        perplexity = torch.exp(-(usage * torch.log(usage + 1e-10)).sum())
        return Quantized(quantized=z + (codes - z).detach(), indices=indices, commitment=commitment,
                         perplexity=perplexity)

    @torch.no_grad()
    def _ema_update(self, z: Tensor, one_hot: Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        size = self.ema_size * self.decay + (1 - self.decay) * one_hot.sum(dim=0)
        total = size.sum()
        size = (size + self.epsilon) / (total + self.num_codes * self.epsilon) * total
        self.ema_size.copy_(size)
        self.ema_weight.mul_(self.decay).add_((1 - self.decay) * (one_hot.t() @ flat))
        self.embedding.copy_(self.ema_weight / self.ema_size[:, None])

    @torch.no_grad()
    def init_from_data(self, z: Tensor, generator: torch.Generator | None = None) -> None:
        """Set every code to an encoder output of ``z`` (B, D, h, w), drawn without replacement while there are
        enough (the fix for AiT's collapse to one code: random normal codes lie far from every encoder output)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        picks = _draw(flat.shape[0], self.num_codes, generator, flat.device)
        self.embedding.copy_(flat[picks])
        self.ema_weight.copy_(flat[picks])
        self.ema_size.fill_(1.0)

    @torch.no_grad()
    def restart_codes(self, dead: Tensor, z: Tensor, generator: torch.Generator | None = None) -> int:
        """Move every code where ``dead`` (N,) bool is set onto an encoder output of ``z`` (B, D, h, w), with a
        fresh EMA state (size 1); returns how many moved. The trainer calls it for codes unused for a while."""
        index = dead.nonzero().flatten()
        if index.numel() == 0:
            return 0
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        picks = _draw(flat.shape[0], index.numel(), generator, flat.device)
        self.embedding[index] = flat[picks]
        self.ema_weight[index] = flat[picks]
        self.ema_size[index] = 1.0
        return int(index.numel())


def _draw(available: int, count: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``count`` row indices out of ``available``: a permutation prefix, repeated when there are too few rows."""
    repeats = -(-count // available)
    order = torch.cat([torch.randperm(available, generator=generator) for _ in range(repeats)])
    return order[:count].to(device)
