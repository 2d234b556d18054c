"""Semantic segmentation metrics from ONE confusion matrix accumulated over the whole set.

Convention: ``shared/reference/depth_normals_conventions.md`` §3 and ``DESIGN.md`` §6 (as mmseg, Mask2Former
and the NYUD multi-task code): pixels whose target is the ignore label are skipped; all other pixels of all
images go into a single confusion matrix M (rows = ground truth, columns = prediction). Then, per class c,

    IoU_c = TP_c / (TP_c + FP_c + FN_c),  TP_c = M[c, c], FP_c = Σ_r≠c M[r, c], FN_c = Σ_k≠c M[c, k]

and ``miou`` is the mean of IoU_c over the classes that occur in the ground truth or the prediction anywhere
in the set; a class absent from both (TP + FP + FN = 0) has an undefined IoU (NaN, key ``iou_<c>`` = NaN) and
is left out of the mean (the numpy ``nanmean`` convention of mmseg / Mask2Former). ``pixel_accuracy`` =
Σ_c TP_c / (number of non-ignored pixels).

A predicted value outside 0..C−1 (or equal to the ignore label) is never correct: it is recorded in an
extra "other" column of the matrix, so it adds to FN of the true class but to nobody's FP. A target value
outside 0..C−1 that is not the ignore label is an error. If the ignore label lies inside 0..C−1 (deeplab2's
COCO uses 0), that class is not evaluated.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from polymax.metrics._inputs import as_tensor, check_integer, check_rank, check_same_shape


class SemanticMetrics:
    """Streaming mIoU / per-class IoU / pixel accuracy for (B, H, W) integer label maps."""

    def __init__(self, num_classes: int, ignore_label: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.reset()

    def reset(self) -> None:
        # (C, C + 1): the last column collects predictions that are not a valid class.
        self._confusion = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64)

    @property
    def confusion_matrix(self) -> np.ndarray:
        """(C, C + 1) int64 counts: rows ground truth, columns prediction, last column invalid predictions."""
        return self._confusion.numpy().copy()

    def state(self) -> dict[str, np.ndarray]:
        """What has been accumulated, as plain picklable data: ``merge`` adds it into another instance (sharded
        evaluation: each process scores its share of the images, then every share's state is merged)."""
        return {"confusion": self._confusion.numpy().copy()}

    def merge(self, state: dict[str, np.ndarray]) -> None:
        """Add another instance's :meth:`state` (the counts of other images) to this one's."""
        confusion = torch.as_tensor(np.asarray(state["confusion"]), dtype=torch.int64)
        if confusion.shape != self._confusion.shape:
            raise ValueError(f"SemanticMetrics.merge: a state for {confusion.shape[0]} classes, this metric has "
                             f"{self.num_classes}")
        self._confusion += confusion

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add a batch of (B, H, W) predicted and ground-truth class ids."""
        pred = as_tensor(pred, name="semantic prediction")
        target = as_tensor(target, name="semantic target")
        check_rank(tuple(target.shape), rank=3, name="semantic target", layout="(B, H, W)")
        check_rank(tuple(pred.shape), rank=3, name="semantic prediction", layout="(B, H, W)")
        check_same_shape(tuple(pred.shape), tuple(target.shape), what="SemanticMetrics.update")
        check_integer(not pred.is_floating_point() and not pred.is_complex(), name="semantic prediction",
                      dtype=pred.dtype)
        check_integer(not target.is_floating_point() and not target.is_complex(), name="semantic target",
                      dtype=target.dtype)

        target = target.to(torch.int64).reshape(-1)
        pred = pred.to(device=target.device, dtype=torch.int64).reshape(-1)
        keep = target != self.ignore_label
        target = target[keep]
        pred = pred[keep]
        out_of_range = (target < 0) | (target >= self.num_classes)
        if bool(out_of_range.any()):
            bad = torch.unique(target[out_of_range])[:10].tolist()
            raise ValueError(f"semantic target has ids {bad} outside 0..{self.num_classes - 1} that are not the "
                             f"ignore label {self.ignore_label}")
        invalid_pred = (pred < 0) | (pred >= self.num_classes) | (pred == self.ignore_label)
        pred = torch.where(invalid_pred, torch.full_like(pred, self.num_classes), pred)
        width = self.num_classes + 1
        counts = torch.bincount(target * width + pred, minlength=self.num_classes * width)
        self._confusion += counts.reshape(self.num_classes, width).cpu()

    def per_class_iou(self) -> np.ndarray:
        """(C,) float64 IoU per class; NaN where the class never occurs (nor the ignore class)."""
        confusion = self._confusion.to(torch.float64)
        true_positive = confusion.diagonal()
        false_negative = confusion.sum(dim=1) - true_positive
        false_positive = confusion[:, : self.num_classes].sum(dim=0) - true_positive
        denominator = true_positive + false_positive + false_negative
        iou = torch.where(denominator > 0, true_positive / denominator.clamp(min=1.0),
                          torch.full_like(denominator, math.nan))
        if 0 <= self.ignore_label < self.num_classes:
            iou[self.ignore_label] = math.nan
        return iou.numpy()

    def compute(self) -> dict[str, float]:
        """``miou``, ``pixel_accuracy`` and ``iou_<c>`` for every evaluated class c (fractions in [0, 1])."""
        iou = self.per_class_iou()
        present = ~np.isnan(iou)
        total = int(self._confusion.sum())
        result = {
            "miou": float(iou[present].mean()) if present.any() else math.nan,
            "pixel_accuracy": float(self._confusion.diagonal().sum()) / total if total else math.nan,
        }
        for class_id in range(self.num_classes):
            if class_id != self.ignore_label:
                result[f"iou_{class_id}"] = float(iou[class_id])
        return result
