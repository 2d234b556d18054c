"""Surface-normal losses (conventions note §4, Bae et al.'s ``compute_loss``; PolyMaX paper §4.1).

Inputs: pred (B, 3, H, W) predicted normals, target (B, 3, H, W) ground truth, valid (B, H, W) bool.
A pixel whose GT normal is all-zero is invalid (:func:`valid_normals`). Both losses return the per-image
mean over valid pixels (B,), unweighted; an image without a valid pixel gets 0.

* :func:`normal_l2_loss` — mean over valid pixels of Σ_c (n̂_c − n_c)², the paper's choice ("better training
  stability than truncated angular loss"). For unit vectors it equals 2 − 2 cos θ.
* :func:`angular_loss` — mean over valid pixels of θ = arccos(cos(n̂, n)) in radians, excluding pixels with
  |cos| ≥ 0.999 (arccos' derivative is infinite at ±1; Bae et al.'s "AL"). Excluded pixels leave the mean.
"""

from __future__ import annotations

import torch
from torch import Tensor

# |cos| at or above this is left out of the angular loss (θ < 2.6° or > 177.4°).
ANGULAR_COS_LIMIT = 0.999


def valid_normals(target: Tensor) -> Tensor:
    """(B, 3, H, W) GT normals → (B, H, W) bool, True where the vector is not all-zero (and finite)."""
    finite = torch.isfinite(target).all(dim=1)
    return (target != 0).any(dim=1) & finite


def _check(pred: Tensor, target: Tensor, valid: Tensor) -> None:
    if pred.dim() != 4 or pred.shape[1] != 3 or pred.shape != target.shape:
        raise ValueError(f"normal loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be "
                         "(B, 3, H, W)")
    if valid.shape != (pred.shape[0], *pred.shape[2:]):
        raise ValueError(f"normal loss: valid must be (B, H, W) = {(pred.shape[0], *pred.shape[2:])}, "
                         f"got {tuple(valid.shape)}")


def _mean_over(values: Tensor, keep: Tensor) -> Tensor:
    """(B, H, W) values, (B, H, W) bool → (B,) mean over the kept pixels (0 without any)."""
    total = torch.where(keep, values, torch.zeros_like(values)).flatten(1).sum(dim=1)
    return total / keep.flatten(1).sum(dim=1).clamp_min(1).to(values.dtype)


def normal_l2_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Per image mean over valid pixels of ‖n̂ − n‖². Returns (B,)."""
    _check(pred, target, valid)
    pred, target = pred.float(), torch.where(valid[:, None], target.float(), torch.zeros_like(pred, dtype=torch.float))
    return _mean_over((pred - target).square().sum(dim=1), valid)


def angular_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Per image mean angle (radians) over valid pixels with |cos| < 0.999. Returns (B,)."""
    _check(pred, target, valid)
    pred, target = pred.float(), torch.where(valid[:, None], target.float(), torch.zeros_like(pred, dtype=torch.float))
    dot = (pred * target).sum(dim=1)
    norms = (pred.square().sum(dim=1) * target.square().sum(dim=1)).clamp_min(1e-24).sqrt()
    cosine = dot / norms
    keep = valid & (cosine.abs() < ANGULAR_COS_LIMIT)
    # Kept pixels have |cos| < 0.999, so arccos and its gradient are finite there; others are masked before it.
    safe = torch.where(keep, cosine, torch.zeros_like(cosine))
    return _mean_over(torch.acos(safe), keep)
