"""Monocular depth losses (conventions note §4; PolyMaX paper §4.1). Every function takes

    pred:   (B, H, W) or (B, 1, H, W) predicted depth in metres, > 0 on valid pixels;
    target: same shape, ground-truth depth in metres;
    valid:  same shape, bool — the pixels that count;

and returns the per-image loss (B,), unweighted. An image without a valid pixel gets 0. The criteria average
the per-image values over the batch (as deeplab2 and the kMaX losses do).

* :func:`scale_invariant_log_error` — deeplab2 / ViP-DeepLab ``SILogError``, the form PolyMaX's code base uses:
  with d = ln p − ln g over the image's valid pixels, SILog = mean(d²) − mean(d)², i.e. Eigen et al.'s
  scale-invariant error with λ = 1, **no square root and no ×10** (AdaBins' form is 10·sqrt(mean d² − 0.85·mean² d)).
  It is the variance of the log error: a global scale factor on p costs nothing.
* :func:`relative_squared_error` — deeplab2 ``RelativeSquaredError``: sqrt(mean(((g − p) / g)²)).
  It fixes the scale that SILog leaves free.
* :func:`multiscale_gradient_loss` — MegaDepth (Li & Snavely 2018): with R = ln p − ln g, at scales s = 1, 2, 4, 8
  (every s-th pixel), Σ over horizontally / vertically adjacent valid pairs of |ΔR|, divided by the number of
  valid pixels at that scale; summed over the scales. It penalises log-depth edges that do not match the GT's.
* :func:`charbonnier_loss` — robust loss used for Taskonomy (max depth 128 m, many outliers):
  mean(sqrt((p − g)² + ε²) − ε) in metres. The −ε makes a perfect prediction cost exactly 0; the gradient is
  (p − g) / sqrt((p − g)² + ε²), i.e. L2 near zero and L1-like beyond ε.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The smallest depth a log is taken of; the heads never predict less than min_depth (≥ 1e-3 m).
LOG_FLOOR = 1e-6


def _squeeze(x: Tensor) -> Tensor:
    return x[:, 0] if x.dim() == 4 and x.shape[1] == 1 else x


def _log_residual(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """(B, H, W) ln p − ln g on valid pixels, 0 elsewhere (no log of an invalid 0 is ever taken)."""
    safe_target = torch.where(valid, target, torch.ones_like(target))
    safe_pred = torch.where(valid, pred, torch.ones_like(pred)).clamp_min(LOG_FLOOR)
    return torch.where(valid, torch.log(safe_pred) - torch.log(safe_target), torch.zeros_like(pred))


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt with a zero (not NaN / inf) gradient at 0, so a perfect prediction back-propagates cleanly."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def _prepare(pred: Tensor, target: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    pred, target, valid = _squeeze(pred).float(), _squeeze(target).float(), _squeeze(valid).bool()
    if pred.shape != target.shape or valid.shape != target.shape:
        raise ValueError(f"depth loss: pred {tuple(pred.shape)}, target {tuple(target.shape)} and valid "
                         f"{tuple(valid.shape)} must have the same (B, H, W) shape")
    count = valid.flatten(1).sum(dim=1).float()                      # (B,)
    return pred, target, valid, count


def scale_invariant_log_error(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Per image mean(d²) − mean(d)², d = ln p − ln g (λ = 1, no sqrt). Returns (B,)."""
    pred, target, valid, count = _prepare(pred, target, valid)
    d = _log_residual(pred, target, valid).flatten(1)                # (B, H·W)
    n = count.clamp_min(1.0)
    mean = d.sum(dim=1) / n
    # Float rounding can make the variance a hair negative; it is ≥ 0 mathematically.
    return (d.square().sum(dim=1) / n - mean.square()).clamp_min(0.0)


def relative_squared_error(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Per image sqrt(mean(((g − p) / g)²)). Returns (B,)."""
    pred, target, valid, count = _prepare(pred, target, valid)
    safe_target = torch.where(valid, target, torch.ones_like(target))
    ratio = torch.where(valid, (safe_target - pred) / safe_target, torch.zeros_like(pred)).flatten(1)
    return _safe_sqrt(ratio.square().sum(dim=1) / count.clamp_min(1.0))


def multiscale_gradient_loss(pred: Tensor, target: Tensor, valid: Tensor, *, num_scales: int = 4) -> Tensor:
    """MegaDepth's scale-invariant gradient matching term, summed over ``num_scales`` scales. Returns (B,)."""
    pred, target, valid, _ = _prepare(pred, target, valid)
    residual = _log_residual(pred, target, valid)                    # (B, H, W)
    total = torch.zeros(pred.shape[0], device=pred.device)
    for scale in range(num_scales):
        step = 2**scale
        r, v = residual[:, ::step, ::step], valid[:, ::step, ::step].float()
        # A pair counts only when both of its pixels are valid.
        dx = (r[:, :, 1:] - r[:, :, :-1]).abs() * v[:, :, 1:] * v[:, :, :-1]
        dy = (r[:, 1:, :] - r[:, :-1, :]).abs() * v[:, 1:, :] * v[:, :-1, :]
        count = v.flatten(1).sum(dim=1)
        total = total + (dx.flatten(1).sum(dim=1) + dy.flatten(1).sum(dim=1)) / count.clamp_min(1.0)
    return total


def charbonnier_loss(pred: Tensor, target: Tensor, valid: Tensor, *, epsilon: float = 1e-3) -> Tensor:
    """Per image mean(sqrt((p − g)² + ε²) − ε) over valid pixels, in metres. Returns (B,)."""
    pred, target, valid, count = _prepare(pred, target, valid)
    diff = torch.where(valid, pred - target, torch.zeros_like(pred))
    penalty = torch.sqrt(diff.square() + epsilon**2) - epsilon
    return torch.where(valid, penalty, torch.zeros_like(penalty)).flatten(1).sum(dim=1) / count.clamp_min(1.0)
