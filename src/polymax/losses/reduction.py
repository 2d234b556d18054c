"""Per-sample reduction shared by the pixel-wise losses (deeplab2 ``compute_average_top_k_loss``)."""

from __future__ import annotations

from torch import Tensor


def average_nonzero(losses: Tensor, top_k_percent: float = 1.0) -> Tensor:
    """Mean of the non-zero entries per sample, optionally over the top-k fraction only (hard-pixel mining).

    losses: (B, N), already multiplied by their weights (so ignored entries are exactly 0).
    top_k_percent: keep the round(top_k_percent · N) largest entries first (1.0 keeps all).
    Returns (B,); a sample without any non-zero entry gives 0, not NaN. Entries that happen to be exactly 0
    (a perfect prediction) are not counted, as in deeplab2.
    """
    if not 0.0 <= top_k_percent <= 1.0:
        raise ValueError(f"top_k_percent must lie in [0, 1], got {top_k_percent}")
    if top_k_percent < 1.0:
        losses = losses.topk(round(top_k_percent * losses.shape[1]), dim=1).values
    count = (losses != 0).sum(dim=1)
    return losses.sum(dim=1) / count.clamp(min=1)
