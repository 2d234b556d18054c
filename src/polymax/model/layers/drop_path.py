"""Stochastic depth (drop path) as deeplab2 applies it: per-sample keep mask, survivors scaled by 1/keep."""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Drops the whole residual branch of a sample with probability 1 - keep_prob (training only)."""

    def __init__(self, keep_prob: float = 1.0) -> None:
        super().__init__()
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"drop-path keep probability must be in (0, 1], got {keep_prob}")
        self.keep_prob = keep_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.keep_prob == 1.0:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(self.keep_prob)
        return x * mask / self.keep_prob

    def extra_repr(self) -> str:
        return f"keep_prob={self.keep_prob}"
