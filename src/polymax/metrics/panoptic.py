"""Panoptic quality (PQ = SQ · RQ) following the official COCO panoptic evaluation.

Definition: Kirillov et al., "Panoptic Segmentation" (CVPR 2019) §4 and the behaviour of the COCO panoptic
evaluation tool; id conventions from ``shared/reference/kmax_deeplab2_spec.md`` (id = class · label_divisor +
instance, instance 0 for stuff, class = ignore label marks void).

Per image, a segment is the set of pixels sharing one id. Ground-truth void pixels (class = ignore label)
belong to no segment; ground-truth crowd pixels (``crowd`` mask, COCO ``iscrowd``) form one crowd region per
class and are not ground-truth segments either. Predicted pixels with the ignore class are unpredicted.

* A predicted segment p and a ground-truth segment g of the same class match when IoU > 0.5 with
  IoU = |p ∩ g| / (|p| + |g| − |p ∩ g| − |p ∩ void|): the prediction's pixels on GT void leave the union.
  (Matches are unique because IoU > 0.5.) Each match is a TP and adds its IoU to the class.
* Unmatched GT segments are FN.
* An unmatched predicted segment is an FP unless (|p ∩ void| + |p ∩ crowd of p's class|) / |p| > 0.5.
* Per class: PQ = ΣIoU / (TP + FP/2 + FN/2), SQ = ΣIoU / TP (0 when TP = 0), RQ = TP / (TP + FP/2 + FN/2).
  ``pq`` / ``sq`` / ``rq`` average these over the classes with TP + FP + FN > 0 over the whole set (as the
  official tool does); ``*_things`` / ``*_stuff`` over such classes among the thing / stuff classes. All
  values are fractions in [0, 1]; NaN when no class qualifies.

The official tool keeps crowd pixels *in* the union of a match (only void is removed). The task brief for
this module also removes the prediction's same-class crowd pixels from the union; that variant is available
as ``exclude_crowd_from_union=True`` (it only differs when a matched prediction overlaps a crowd region of
its own class).

API: ``update(pred, target, crowd=None)`` with (B, H, W) int64 panoptic ids and an optional bool (B, H, W)
crowd mask (crowd pixels whose class is void count as void).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from polymax.metrics._inputs import as_numpy, check_integer, check_rank, check_same_shape

PANOPTIC_KEYS = ("pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff", "sq_stuff", "rq_stuff")
_VOID_KEY = -1  # ground-truth void / unpredicted pixels; crowd regions of class c get the key -2 - c


class PanopticMetrics:
    """Streaming PQ / SQ / RQ (all, things, stuff) for panoptic id maps."""

    def __init__(
        self,
        num_classes: int,
        thing_classes: Iterable[int],
        label_divisor: int = 1000,
        ignore_label: int = 255,
        exclude_crowd_from_union: bool = False,
    ) -> None:
        self.num_classes = int(num_classes)
        self.label_divisor = int(label_divisor)
        self.ignore_label = int(ignore_label)
        self.exclude_crowd_from_union = exclude_crowd_from_union
        if self.num_classes < 1 or self.label_divisor < 1:
            raise ValueError(f"need num_classes >= 1 and label_divisor >= 1, got {num_classes}, {label_divisor}")
        self.is_thing = np.zeros(self.num_classes, dtype=bool)
        for class_id in thing_classes:
            if not 0 <= int(class_id) < self.num_classes or int(class_id) == self.ignore_label:
                raise ValueError(f"thing class {class_id} is not a class in 0..{self.num_classes - 1} "
                                 f"(ignore label {self.ignore_label})")
            self.is_thing[int(class_id)] = True
        self.is_evaluated = np.ones(self.num_classes, dtype=bool)
        if 0 <= self.ignore_label < self.num_classes:
            self.is_evaluated[self.ignore_label] = False
        self.reset()

    def reset(self) -> None:
        self.iou_sum = np.zeros(self.num_classes, dtype=np.float64)
        self.true_positives = np.zeros(self.num_classes, dtype=np.int64)
        self.false_positives = np.zeros(self.num_classes, dtype=np.int64)
        self.false_negatives = np.zeros(self.num_classes, dtype=np.int64)

    def state(self) -> dict[str, np.ndarray]:
        """The per-class tallies as plain picklable data; ``merge`` adds them into another instance (sharded
        evaluation). Each image's matching is complete in the process that saw it, so tallies simply add."""
        return {"iou_sum": self.iou_sum.copy(), "true_positives": self.true_positives.copy(),
                "false_positives": self.false_positives.copy(), "false_negatives": self.false_negatives.copy()}

    def merge(self, state: dict[str, np.ndarray]) -> None:
        """Add another instance's :meth:`state` (the tallies of other images) to this one's."""
        for name in ("iou_sum", "true_positives", "false_positives", "false_negatives"):
            values = np.asarray(state[name])
            if values.shape != (self.num_classes,):
                raise ValueError(f"PanopticMetrics.merge: {name} has shape {values.shape}, this metric has "
                                 f"{self.num_classes} classes")
            own = getattr(self, name)
            own += values.astype(own.dtype, copy=False)   # in place

    def _check_ids(self, ids: np.ndarray, *, name: str) -> np.ndarray:
        if ids.size and ids.min() < 0:
            raise ValueError(f"{name} has negative ids (min {ids.min()})")
        classes = ids // self.label_divisor
        bad = (classes >= self.num_classes) & (classes != self.ignore_label)
        if bad.any():
            raise ValueError(f"{name} has classes {np.unique(classes[bad])[:10].tolist()} outside "
                             f"0..{self.num_classes - 1} that are not the ignore label {self.ignore_label} "
                             f"(label_divisor {self.label_divisor})")
        return classes

    def update(
        self,
        pred: torch.Tensor | np.ndarray,
        target: torch.Tensor | np.ndarray,
        crowd: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add a batch of (B, H, W) predicted / ground-truth panoptic ids and an optional crowd mask."""
        pred = as_numpy(pred, name="panoptic prediction")
        target = as_numpy(target, name="panoptic target")
        check_rank(target.shape, rank=3, name="panoptic target", layout="(B, H, W)")
        check_rank(pred.shape, rank=3, name="panoptic prediction", layout="(B, H, W)")
        check_same_shape(pred.shape, target.shape, what="PanopticMetrics.update")
        check_integer(np.issubdtype(pred.dtype, np.integer), name="panoptic prediction", dtype=pred.dtype)
        check_integer(np.issubdtype(target.dtype, np.integer), name="panoptic target", dtype=target.dtype)
        if crowd is not None:
            crowd = as_numpy(crowd, name="crowd mask")
            if crowd.shape != target.shape:
                raise ValueError(f"PanopticMetrics.update: crowd mask shape {crowd.shape} does not match target "
                                 f"shape {target.shape}")
            crowd = crowd.astype(bool, copy=False)
        for index in range(target.shape[0]):
            self._update_image(pred[index].astype(np.int64, copy=False).ravel(),
                               target[index].astype(np.int64, copy=False).ravel(),
                               None if crowd is None else crowd[index].ravel())

    def _update_image(self, pred: np.ndarray, target: np.ndarray, crowd: np.ndarray | None) -> None:
        target_class = self._check_ids(target, name="panoptic target")
        pred_class = self._check_ids(pred, name="panoptic prediction")
        target_void = target_class == self.ignore_label
        target_key = np.where(target_void, _VOID_KEY, target)
        if crowd is not None:
            target_key = np.where(crowd & ~target_void, -2 - target_class, target_key)
        pred_key = np.where(pred_class == self.ignore_label, _VOID_KEY, pred)

        gt_ids, gt_index, gt_area = np.unique(target_key, return_inverse=True, return_counts=True)
        pred_ids, pred_index, pred_area = np.unique(pred_key, return_inverse=True, return_counts=True)
        # Sparse (gt, pred) intersection table: one row per overlapping pair.
        pair_codes, pair_area = np.unique(gt_index.ravel() * pred_ids.size + pred_index.ravel(), return_counts=True)
        pair_gt, pair_pred = np.divmod(pair_codes, pred_ids.size)
        pair_gt_id, pair_pred_id = gt_ids[pair_gt], pred_ids[pair_pred]

        is_pred_segment = pred_ids >= 0
        pred_segment_class = np.where(is_pred_segment, pred_ids // self.label_divisor, -1)
        void_overlap = np.zeros(pred_ids.size, dtype=np.int64)
        on_void = pair_gt_id == _VOID_KEY
        void_overlap[pair_pred[on_void]] = pair_area[on_void]
        crowd_overlap = np.zeros(pred_ids.size, dtype=np.int64)
        on_own_crowd = (pair_gt_id <= -2) & (-2 - pair_gt_id == pred_segment_class[pair_pred])
        crowd_overlap[pair_pred[on_own_crowd]] = pair_area[on_own_crowd]

        candidate = (pair_gt_id >= 0) & (pair_pred_id >= 0)
        candidate &= pair_gt_id // self.label_divisor == pred_segment_class[pair_pred]
        cand_gt, cand_pred, intersection = pair_gt[candidate], pair_pred[candidate], pair_area[candidate]
        union = pred_area[cand_pred] + gt_area[cand_gt] - intersection - void_overlap[cand_pred]
        if self.exclude_crowd_from_union:
            union = union - crowd_overlap[cand_pred]
        iou = intersection / union
        matched = iou > 0.5
        matched_class = gt_ids[cand_gt[matched]] // self.label_divisor
        np.add.at(self.true_positives, matched_class, 1)
        np.add.at(self.iou_sum, matched_class, iou[matched])

        gt_unmatched = gt_ids >= 0
        gt_unmatched[cand_gt[matched]] = False
        np.add.at(self.false_negatives, gt_ids[gt_unmatched] // self.label_divisor, 1)

        pred_unmatched = is_pred_segment.copy()
        pred_unmatched[cand_pred[matched]] = False
        # Predictions lying mostly on void or on a crowd region of their class are not penalised.
        mostly_ignored = (void_overlap + crowd_overlap) / pred_area > 0.5
        false_positive = pred_unmatched & ~mostly_ignored
        np.add.at(self.false_positives, pred_segment_class[false_positive], 1)

    def per_class(self) -> dict[str, np.ndarray]:
        """Per-class ``pq``, ``sq``, ``rq`` (NaN for classes with TP + FP + FN = 0) and ``tp``, ``fp``, ``fn``."""
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        appears = ((tp + fp + fn) > 0) & self.is_evaluated
        denominator = np.where(appears, tp + 0.5 * fp + 0.5 * fn, 1.0)
        sq = np.where(tp > 0, self.iou_sum / np.maximum(tp, 1), 0.0)
        return {
            "pq": np.where(appears, self.iou_sum / denominator, math.nan),
            "sq": np.where(appears, sq, math.nan),
            "rq": np.where(appears, tp / denominator, math.nan),
            "tp": tp.copy(), "fp": fp.copy(), "fn": fn.copy(),
        }

    def compute(self) -> dict[str, float]:
        """PQ / SQ / RQ averaged over the classes that appear: all, things, stuff."""
        per_class = self.per_class()
        appears = ~np.isnan(per_class["pq"])
        groups = {"": appears, "_things": appears & self.is_thing, "_stuff": appears & ~self.is_thing}
        result = {}
        for suffix, selected in groups.items():
            for name in ("pq", "sq", "rq"):
                result[name + suffix] = float(per_class[name][selected].mean()) if selected.any() else math.nan
        return {key: result[key] for key in PANOPTIC_KEYS}
