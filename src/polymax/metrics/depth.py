"""Monocular depth metrics, computed per image and averaged over images.

Convention: ``shared/reference/depth_normals_conventions.md`` §1 (AdaBins / BTS / ZoeDepth / BinsFormer
``compute_errors``) and §9.1. For one image, with ground truth g and prediction p (metres) over the set V of
its valid pixels (``min_depth < g < max_depth``, strict, and inside the evaluation crop):

* ``abs_rel`` = mean(|g − p| / g)
* ``sq_rel``  = mean((g − p)² / g)                       (Eigen / BTS form; deeplab2's "SqErrorRel" is
  mean(((g − p) / g)²) instead — not what the published NYU tables use)
* ``rms``     = sqrt(mean((g − p)²))
* ``rms_log`` = sqrt(mean((ln g − ln p)²))
* ``log10``   = mean(|log10 g − log10 p|)
* ``silog``   = 100 · sqrt(mean(d²) − mean(d)²), d = ln p − ln g   (the population-variance form of the
  published tables; iDisc / UniDepth use the unbiased variance, deeplab2 reports the variance without
  the 100· and the sqrt)
* ``delta<i>`` = mean([max(g / p, p / g) < 1.25^i]), i = 1, 2, 3 (strict ``<``), a fraction in [0, 1]

Each metric is computed for every image, then the per-image values are averaged over the images (the NYU
protocol: the reported RMS is the mean of per-image RMS values, not a pixel-pooled RMS). Images without a
single valid pixel are skipped (they would otherwise be NaN) and counted in ``num_skipped_images``.

By default predictions are clamped to [min_depth, max_depth] before the metrics (NaN → min_depth,
+inf → max_depth), as AdaBins / ZoeDepth / BTS do at test time; ``clamp_predictions=False`` turns this off,
in which case a non-positive or non-finite prediction on a valid pixel is an error.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from polymax.metrics._inputs import as_tensor, check_rank, check_same_shape

DEPTH_METRIC_KEYS = ("rms", "abs_rel", "sq_rel", "log10", "rms_log", "silog", "delta1", "delta2", "delta3")

# Eigen crop as used verbatim by every modern NYU code base (python slice of the 480×640 GT).
NYU_EVAL_CROP = (45, 471, 41, 601)
NYU_GT_SIZE = (480, 640)


def _drop_channel(depth: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) → (B, H, W), so that a model's depth output can be passed as is."""
    return depth[:, 0] if depth.dim() == 4 and depth.shape[1] == 1 else depth


class DepthMetrics:
    """Streaming per-image depth metrics.

    Args:
        min_depth, max_depth: valid ground truth is ``min_depth < g < max_depth`` (metres); g = 0 is invalid.
        eval_crop: None (whole image), ``"nyu"`` (the Eigen crop [45:471, 41:601], applied only when the ground
            truth is 480×640, otherwise the whole image is used) or an explicit (top, bottom, left, right)
            python-slice tuple applied to every ground truth (negative bounds count from the end, so
            UniDepth's (45, -9, 41, -39) equals the NYU crop).
        clamp_predictions: clamp predictions to [min_depth, max_depth] first (the conventional default).
    """

    def __init__(
        self,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        eval_crop: str | tuple[int, int, int, int] | None = None,
        clamp_predictions: bool = True,
    ) -> None:
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}")
        if isinstance(eval_crop, str) and eval_crop != "nyu":
            raise ValueError(f"eval_crop must be None, 'nyu' or a (top, bottom, left, right) tuple, got {eval_crop!r}")
        if eval_crop is not None and not isinstance(eval_crop, str):
            eval_crop = tuple(int(v) for v in eval_crop)
            if len(eval_crop) != 4:
                raise ValueError(f"eval_crop must be a (top, bottom, left, right) tuple, got {eval_crop}")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.eval_crop = eval_crop
        self.clamp_predictions = clamp_predictions
        self.reset()

    def reset(self) -> None:
        self._sums = dict.fromkeys(DEPTH_METRIC_KEYS, 0.0)
        self.num_images = 0
        self.num_skipped_images = 0

    def state(self) -> dict[str, object]:
        """The per-image sums and image counts as plain picklable data; ``merge`` adds them into another instance
        (sharded evaluation)."""
        return {"sums": dict(self._sums), "num_images": self.num_images,
                "num_skipped_images": self.num_skipped_images}

    def merge(self, state: dict) -> None:
        """Add another instance's :meth:`state` (the sums over other images) to this one's."""
        for key in DEPTH_METRIC_KEYS:
            self._sums[key] += float(state["sums"][key])
        self.num_images += int(state["num_images"])
        self.num_skipped_images += int(state["num_skipped_images"])

    def _crop_mask(self, height: int, width: int, device: torch.device) -> torch.Tensor | None:
        if self.eval_crop is None:
            return None
        if self.eval_crop == "nyu":
            if (height, width) != NYU_GT_SIZE:
                return None
            top, bottom, left, right = NYU_EVAL_CROP
        else:
            top, bottom, left, right = self.eval_crop
        mask = torch.zeros(height, width, dtype=torch.bool, device=device)
        mask[top:bottom, left:right] = True  # python-slice semantics: negative bounds count from the end
        if not bool(mask.any()):
            raise ValueError(f"eval_crop {self.eval_crop} selects no pixel of a {height}×{width} ground truth")
        return mask

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add a batch: ``pred`` and ``target`` are (B, H, W) (or (B, 1, H, W)) metres, target 0 = invalid."""
        pred = _drop_channel(as_tensor(pred, name="depth prediction"))
        target = _drop_channel(as_tensor(target, name="depth target"))
        check_rank(tuple(target.shape), rank=3, name="depth target", layout="(B, H, W)")
        check_rank(tuple(pred.shape), rank=3, name="depth prediction", layout="(B, H, W)")
        check_same_shape(tuple(pred.shape), tuple(target.shape), what="DepthMetrics.update")
        # The range test runs in the ground truth's own dtype (as numpy does in the reference code bases), so
        # a float32 GT of 1e-3 equals min_depth = 1e-3 and is invalid; the sums then run in float64 so that
        # per-image sums over ~300k pixels do not lose digits.
        valid = (target > self.min_depth) & (target < self.max_depth)
        pred = pred.to(device=target.device, dtype=torch.float64)
        target = target.to(dtype=torch.float64)
        crop = self._crop_mask(target.shape[1], target.shape[2], target.device)
        if crop is not None:
            valid &= crop
        if self.clamp_predictions:
            pred = torch.nan_to_num(pred, nan=self.min_depth, posinf=self.max_depth, neginf=self.min_depth)
            pred = pred.clamp(self.min_depth, self.max_depth)
        else:
            bad = valid & ~(torch.isfinite(pred) & (pred > 0))
            if bool(bad.any()):
                raise ValueError(f"{int(bad.sum())} valid pixels have a non-positive or non-finite predicted depth; "
                                 "use clamp_predictions=True or fix the predictions")

        # Neutral values off the valid set keep logs and divisions finite; those pixels are masked out below.
        g = torch.where(valid, target, torch.ones_like(target))
        p = torch.where(valid, pred, torch.ones_like(pred))
        weight = valid.to(torch.float64)
        count = weight.sum(dim=(1, 2))
        has_pixels = count > 0
        count = count.clamp(min=1.0)

        def image_mean(values: torch.Tensor) -> torch.Tensor:
            return (values * weight).sum(dim=(1, 2)) / count

        diff = g - p
        log_diff = torch.log(p) - torch.log(g)
        ratio = torch.maximum(g / p, p / g)
        per_image = {
            "abs_rel": image_mean(diff.abs() / g),
            "sq_rel": image_mean(diff * diff / g),
            "rms": image_mean(diff * diff).sqrt(),
            "rms_log": image_mean(log_diff * log_diff).sqrt(),
            "log10": image_mean((torch.log10(g) - torch.log10(p)).abs()),
            # Rounding can make the variance a hair below zero for a perfect prediction.
            "silog": 100.0 * (image_mean(log_diff * log_diff) - image_mean(log_diff) ** 2).clamp(min=0.0).sqrt(),
        }
        for power in (1, 2, 3):
            per_image[f"delta{power}"] = image_mean((ratio < 1.25**power).to(torch.float64))

        for key, values in per_image.items():
            self._sums[key] += float(values[has_pixels].sum())
        kept = int(has_pixels.sum())
        self.num_images += kept
        self.num_skipped_images += int(has_pixels.numel()) - kept

    def compute(self) -> dict[str, float]:
        """Mean over images of each per-image metric; NaN for every key when no image had a valid pixel."""
        if self.num_images == 0:
            return dict.fromkeys(DEPTH_METRIC_KEYS, math.nan)
        return {key: self._sums[key] / self.num_images for key in DEPTH_METRIC_KEYS}
