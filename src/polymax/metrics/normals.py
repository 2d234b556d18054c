"""Surface-normal angular-error metrics, pooled over every valid pixel of the whole set.

Convention: ``shared/reference/depth_normals_conventions.md`` §2 and §9.2 (Fouhey's protocol, as in Bae et al.
and DSINE): a pixel is valid when its ground-truth normal is not all-zero. Both vectors are normalised
(cosine similarity; a zero prediction has no direction and scores 90°), and the error is
e = degrees(acos(clamp(n̂_pred · n̂_gt, −1, 1))). Over the multiset E of errors of all valid pixels of all
images seen so far:

* ``mean`` = mean(E), ``median`` = median(E) (numpy's: the average of the two middle values for an even
  count), ``rms`` = sqrt(mean(E²)), all in degrees;
* ``within_<t>`` = mean([E < t]) for t in {11.25, 22.5, 30} (strict ``<``), fractions in [0, 1]. The keys
  spell the dot as an underscore: ``within_11_25``, ``within_22_5``, ``within_30``.

Memory: the exact set median needs every error, so by default each valid pixel's angle is kept as a float32
on the CPU — 4 bytes per valid pixel (about 0.8 GB at most for the 654 NYU test images at 480×640, less in
practice because the GT normals are only defined in the central region). The median is then exact up to
float32 rounding of the angles (relative 6e-8). With ``exact_median=False`` the angles go into a fixed
histogram instead (``median_bin_degrees`` wide bins, 180 / width counters) and the median is the centre of
the bin holding it, i.e. within half a bin of the exact value. Mean, RMS and the ratios are always exact
(float64 running sums).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from polymax.metrics._inputs import as_tensor, check_rank, check_same_shape

DEFAULT_THRESHOLDS = (11.25, 22.5, 30.0)


def threshold_key(threshold: float) -> str:
    """``within_11_25`` for 11.25, ``within_30`` for 30.0."""
    text = f"{threshold:g}".replace(".", "_")
    return f"within_{text}"


def angular_errors_degrees(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel angle (degrees, float64) between (B, 3, H, W) vectors, and the (B, H, W) valid mask."""
    pred = pred.to(device=target.device, dtype=torch.float64)
    target = target.to(dtype=torch.float64)
    # Explicit per-channel products: a reduction over dim 1 of a (B, 3, H, W) tensor is several times slower.
    px, py, pz = pred.unbind(dim=1)
    tx, ty, tz = target.unbind(dim=1)
    valid = (tx != 0) | (ty != 0) | (tz != 0)
    dot = px * tx + py * ty + pz * tz
    norms = torch.sqrt((px * px + py * py + pz * pz) * (tx * tx + ty * ty + tz * tz))
    # A zero-length prediction gives dot = 0 → cos 0 → 90°, instead of a NaN from 0 / 0.
    cosine = dot / norms.clamp(min=torch.finfo(torch.float64).tiny)
    angles = torch.rad2deg(torch.acos(cosine.clamp(-1.0, 1.0)))
    return angles, valid


class NormalMetrics:
    """Streaming pooled angular-error metrics for (B, 3, H, W) normals (target all-zero = invalid)."""

    def __init__(
        self,
        thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
        exact_median: bool = True,
        median_bin_degrees: float = 1e-3,
    ) -> None:
        if median_bin_degrees <= 0:
            raise ValueError(f"median_bin_degrees must be > 0, got {median_bin_degrees}")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.exact_median = exact_median
        self.median_bin_degrees = float(median_bin_degrees)
        self.reset()

    def reset(self) -> None:
        self.num_pixels = 0
        self._sum = 0.0
        self._sum_squares = 0.0
        self._within = [0 for _ in self.thresholds]
        self._angle_chunks: list[np.ndarray] = []
        num_bins = math.ceil(180.0 / self.median_bin_degrees)
        self._histogram = None if self.exact_median else np.zeros(num_bins, dtype=np.int64)

    def state(self) -> dict[str, object]:
        """Counts, sums and the median's data (every angle, or the histogram) as plain picklable data; ``merge``
        adds them into another instance (sharded evaluation)."""
        return {"thresholds": self.thresholds, "num_pixels": self.num_pixels, "sum": self._sum,
                "sum_squares": self._sum_squares, "within": list(self._within),
                "angle_chunks": list(self._angle_chunks),
                "histogram": None if self._histogram is None else self._histogram.copy()}

    def merge(self, state: dict) -> None:
        """Add another instance's :meth:`state` (other pixels) to this one's; the angles are appended after this
        instance's own, so merging shares in image order keeps them in that order."""
        if tuple(state["thresholds"]) != self.thresholds or (state["histogram"] is None) != self.exact_median:
            raise ValueError("NormalMetrics.merge: the state comes from a metric with other thresholds or another "
                             "median method")
        self.num_pixels += int(state["num_pixels"])
        self._sum += float(state["sum"])
        self._sum_squares += float(state["sum_squares"])
        self._within = [mine + int(theirs) for mine, theirs in zip(self._within, state["within"])]
        if self.exact_median:
            self._angle_chunks.extend(state["angle_chunks"])
        else:
            self._histogram += state["histogram"]

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add a batch of (B, 3, H, W) predicted and ground-truth normals."""
        pred = as_tensor(pred, name="normal prediction")
        target = as_tensor(target, name="normal target")
        check_rank(tuple(target.shape), rank=4, name="normal target", layout="(B, 3, H, W)")
        check_rank(tuple(pred.shape), rank=4, name="normal prediction", layout="(B, 3, H, W)")
        if target.shape[1] != 3:
            raise ValueError(f"normal target must have 3 channels (B, 3, H, W), got shape {tuple(target.shape)}")
        check_same_shape(tuple(pred.shape), tuple(target.shape), what="NormalMetrics.update")

        angles, valid = angular_errors_degrees(pred, target)
        angles = angles[valid]
        self.num_pixels += int(angles.numel())
        self._sum += float(angles.sum())
        self._sum_squares += float((angles * angles).sum())
        for index, threshold in enumerate(self.thresholds):
            self._within[index] += int((angles < threshold).sum())
        if self.exact_median:
            self._angle_chunks.append(angles.to(torch.float32).cpu().numpy())
        else:
            bins = (angles / self.median_bin_degrees).floor().long().clamp(0, self._histogram.size - 1)
            self._histogram += np.bincount(bins.cpu().numpy(), minlength=self._histogram.size)

    def _median(self) -> float:
        if self.exact_median:
            return float(np.median(np.concatenate(self._angle_chunks).astype(np.float64)))
        cumulative = np.cumsum(self._histogram)
        # Bin(s) holding the two middle order statistics (1-based ranks ceil(n/2) and floor(n/2)+1).
        low = int(np.searchsorted(cumulative, (self.num_pixels + 1) // 2))
        high = int(np.searchsorted(cumulative, self.num_pixels // 2 + 1))
        return 0.5 * (low + high + 1) * self.median_bin_degrees

    def compute(self) -> dict[str, float]:
        """Pooled metrics over all valid pixels seen; NaN for every key when there were none."""
        keys = ["mean", "median", "rms", *(threshold_key(t) for t in self.thresholds)]
        if self.num_pixels == 0:
            return dict.fromkeys(keys, math.nan)
        result = {
            "mean": self._sum / self.num_pixels,
            "median": self._median(),
            "rms": math.sqrt(self._sum_squares / self.num_pixels),
        }
        for threshold, count in zip(self.thresholds, self._within):
            result[threshold_key(threshold)] = count / self.num_pixels
        return result
