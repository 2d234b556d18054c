"""COCO instance-segmentation mask AP, computed by pycocotools (the optional ``coco`` extra).

Definition: the COCO detection evaluation (mask IoU, IoU thresholds 0.50:0.05:0.95, 101-point interpolated
precision, area ranges small < 32² ≤ medium < 96² ≤ large, at most ``max_detections`` detections per image),
as run by ``pycocotools.cocoeval.COCOeval(iouType="segm")``; this module only converts inputs and reads the
accumulated precision / recall tables. Results are fractions in [0, 1]; NaN where COCO reports −1 (nothing
to evaluate, e.g. no ground-truth instance in an area range).

Ground-truth instances come from panoptic id maps (id = class · label_divisor + instance): every id whose
class is one of ``thing_classes`` is one instance (its area = its pixel count). Pixels of the optional crowd
mask are not part of any instance; per image and thing class they form one ``iscrowd=1`` region, which COCO
uses to ignore detections that fall on it. Void and stuff pixels give no instance.

API: ``update(pred, target, crowd=None)``: ``pred`` is a sequence with one entry per image, each a mapping
with ``"masks"`` (N, H, W) bool, ``"labels"`` (N,) class ids and ``"scores"`` (N,) confidences; ``target`` is
(B, H, W) panoptic ids and ``crowd`` an optional bool (B, H, W) mask. Predictions whose label is not a thing
class are dropped (instance AP is defined over thing classes only), so a panoptic model's full segment list
can be passed as is. Memory: masks are kept as COCO run-length encodings until ``compute()``.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from polymax.errors import UserError
from polymax.metrics._inputs import as_numpy, check_rank

INSTANCE_KEYS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")


def _import_pycocotools():
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise UserError("instance AP needs pycocotools: run `pip install pycocotools` "
                        "(or install polymax with the `coco` extra: `pip install polymax[coco]`)") from error
    return mask_utils, COCO, COCOeval


def instances_from_panoptic(
    panoptic: np.ndarray,
    thing_classes: Iterable[int],
    label_divisor: int = 1000,
    crowd: np.ndarray | None = None,
) -> list[tuple[int, np.ndarray, bool]]:
    """(class, bool (H, W) mask, is_crowd) for every thing instance of one (H, W) panoptic map.

    Crowd pixels of each thing class are returned as a single region with is_crowd = True.
    """
    thing_set = {int(c) for c in thing_classes}
    classes = panoptic // label_divisor
    is_thing = np.isin(classes, list(thing_set))
    crowd = np.zeros(panoptic.shape, dtype=bool) if crowd is None else crowd.astype(bool, copy=False)
    instances = []
    for segment_id in np.unique(panoptic[is_thing & ~crowd]):
        instances.append((int(segment_id // label_divisor), (panoptic == segment_id) & ~crowd, False))
    for class_id in np.unique(classes[is_thing & crowd]):
        instances.append((int(class_id), is_thing & crowd & (classes == class_id), True))
    return instances


class InstanceMetrics:
    """Streaming COCO mask AP over thing classes (pycocotools does the evaluation in ``compute``)."""

    def __init__(
        self,
        thing_classes: Iterable[int],
        label_divisor: int = 1000,
        ignore_label: int = 255,
        max_detections: int = 100,
    ) -> None:
        self._mask_utils, self._coco_class, self._coco_eval_class = _import_pycocotools()
        self.thing_classes = sorted({int(c) for c in thing_classes} - {int(ignore_label)})
        if not self.thing_classes:
            raise ValueError("InstanceMetrics needs at least one thing class")
        self.label_divisor = int(label_divisor)
        self.ignore_label = int(ignore_label)
        self.max_detections = int(max_detections)
        self.reset()

    def reset(self) -> None:
        self._images: list[dict] = []
        self._gt_annotations: list[dict] = []
        self._detections: list[dict] = []

    def state(self) -> dict[str, list[dict]]:
        """Images, ground-truth instances and detections (run-length encoded) as plain picklable data; ``merge``
        appends them to another instance (sharded evaluation)."""
        return {"images": [dict(image) for image in self._images],
                "gt_annotations": [dict(entry) for entry in self._gt_annotations],
                "detections": [dict(entry) for entry in self._detections]}

    def merge(self, state: dict[str, list[dict]]) -> None:
        """Append another instance's :meth:`state` after this one's images. Ids are renumbered to continue this
        instance's, so merging the shares of a split set in order gives exactly the ids (and COCOeval's image
        order) of one instance that saw every image."""
        image_offset = len(self._images)
        for image in state["images"]:
            self._images.append({**image, "id": image["id"] + image_offset})
        for entries, own in ((state["gt_annotations"], self._gt_annotations), (state["detections"], self._detections)):
            offset = len(own)
            for entry in entries:
                own.append({**entry, "id": entry["id"] + offset, "image_id": entry["image_id"] + image_offset})

    def _encode(self, masks: np.ndarray) -> list[dict]:
        """COCO RLEs of (N, H, W) bool masks."""
        if masks.shape[0] == 0:
            return []
        return self._mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))

    def update(
        self,
        pred: Sequence[Mapping[str, torch.Tensor | np.ndarray]],
        target: torch.Tensor | np.ndarray,
        crowd: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add a batch: per-image predicted instances and (B, H, W) ground-truth panoptic ids."""
        target = as_numpy(target, name="panoptic target").astype(np.int64, copy=False)
        check_rank(target.shape, rank=3, name="panoptic target", layout="(B, H, W)")
        if len(pred) != target.shape[0]:
            raise ValueError(f"InstanceMetrics.update: {len(pred)} prediction entries for a target batch of shape "
                             f"{target.shape}")
        if crowd is not None:
            crowd = as_numpy(crowd, name="crowd mask").astype(bool, copy=False)
            if crowd.shape != target.shape:
                raise ValueError(f"InstanceMetrics.update: crowd mask shape {crowd.shape} does not match target "
                                 f"shape {target.shape}")
        for index, image_pred in enumerate(pred):
            self._add_image(image_pred, target[index], None if crowd is None else crowd[index])

    def _add_image(self, image_pred: Mapping, target: np.ndarray, crowd: np.ndarray | None) -> None:
        missing = {"masks", "labels", "scores"} - set(image_pred)
        if missing:
            raise ValueError(f"each prediction needs 'masks', 'labels' and 'scores'; missing {sorted(missing)}")
        masks = as_numpy(image_pred["masks"], name="instance masks").astype(bool, copy=False)
        labels = as_numpy(image_pred["labels"], name="instance labels").astype(np.int64, copy=False).reshape(-1)
        scores = as_numpy(image_pred["scores"], name="instance scores").astype(np.float64, copy=False).reshape(-1)
        if masks.ndim != 3 or masks.shape[1:] != target.shape or not masks.shape[0] == labels.size == scores.size:
            raise ValueError(f"instance masks must be (N, H, W) with H, W = target {target.shape} and N labels and "
                             f"scores; got masks {masks.shape}, labels {labels.shape}, scores {scores.shape}")
        image_id = len(self._images) + 1  # COCO ids must be positive: 0 means "unmatched" inside COCOeval
        self._images.append({"id": image_id, "height": int(target.shape[0]), "width": int(target.shape[1])})

        instances = instances_from_panoptic(target, self.thing_classes, self.label_divisor, crowd)
        if instances:
            rles = self._encode(np.stack([mask for _, mask, _ in instances]))
            for (class_id, mask, is_crowd), rle in zip(instances, rles):
                self._gt_annotations.append({
                    "id": len(self._gt_annotations) + 1, "image_id": image_id, "category_id": class_id + 1,
                    "segmentation": rle, "area": float(mask.sum()), "iscrowd": int(is_crowd),
                    "bbox": [float(v) for v in self._mask_utils.toBbox(rle)],
                })

        keep = np.isin(labels, self.thing_classes)
        rles = self._encode(masks[keep])
        for rle, class_id, score in zip(rles, labels[keep], scores[keep]):
            self._detections.append({
                "id": len(self._detections) + 1, "image_id": image_id, "category_id": int(class_id) + 1,
                "segmentation": rle, "area": float(self._mask_utils.area(rle)), "score": float(score),
                "iscrowd": 0, "bbox": [float(v) for v in self._mask_utils.toBbox(rle)],
            })

    def _coco(self, annotations: list[dict]):
        coco = self._coco_class()
        # Category ids are class + 1 so that class 0 is a valid positive COCO id.
        coco.dataset = {"images": list(self._images), "annotations": annotations,
                        "categories": [{"id": c + 1, "name": str(c)} for c in self.thing_classes]}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def compute(self) -> dict[str, float]:
        """``ap``, ``ap50``, ``ap75``, ``ap_small/medium/large`` and ``ar_1``, ``ar_10``, ``ar_<max_detections>``."""
        max_dets = [1, 10, self.max_detections]
        keys = [*INSTANCE_KEYS, *(f"ar_{m}" for m in max_dets)]
        if not self._images:
            return dict.fromkeys(keys, math.nan)
        evaluator = self._accumulate(max_dets)
        # precision: (IoU thresholds, recall points, classes, area ranges, max dets); recall drops the 2nd axis.
        precision, recall = evaluator.eval["precision"], evaluator.eval["recall"]
        at_50, at_75, area = self._axes(evaluator)
        result = {
            "ap": _mean_defined(precision[:, :, :, area["all"], -1]),
            "ap50": _mean_defined(precision[at_50, :, :, area["all"], -1]),
            "ap75": _mean_defined(precision[at_75, :, :, area["all"], -1]),
        }
        for size in ("small", "medium", "large"):
            result[f"ap_{size}"] = _mean_defined(precision[:, :, :, area[size], -1])
        for index, max_det in enumerate(max_dets):
            result[f"ar_{max_det}"] = _mean_defined(recall[:, :, area["all"], index])
        return result

    def per_class(self) -> dict[str, np.ndarray]:
        """Per thing class (in ``thing_classes`` order): ``ap``, ``ap50``, ``ap75`` over all areas at
        ``max_detections`` (NaN where the class has no ground truth instance and no detection)."""
        count = len(self.thing_classes)
        if not self._images:
            return {key: np.full(count, math.nan) for key in ("ap", "ap50", "ap75")}
        evaluator = self._accumulate([1, 10, self.max_detections])
        precision = evaluator.eval["precision"]
        at_50, at_75, area = self._axes(evaluator)
        table = {"ap": precision[:, :, :, area["all"], -1], "ap50": precision[at_50, :, :, area["all"], -1],
                 "ap75": precision[at_75, :, :, area["all"], -1]}
        # The class axis is the second-to-last one left: (…, classes).
        return {key: np.array([_mean_defined(values[..., k]) for k in range(count)]) for key, values in table.items()}

    def _accumulate(self, max_dets: list[int]):
        evaluator = self._coco_eval_class(self._coco(self._gt_annotations), self._coco(self._detections), "segm")
        evaluator.params.imgIds = [image["id"] for image in self._images]
        evaluator.params.catIds = [c + 1 for c in self.thing_classes]
        evaluator.params.maxDets = max_dets
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
        return evaluator

    @staticmethod
    def _axes(evaluator) -> tuple[int, int, dict[str, int]]:
        """Indices of IoU 0.5 and 0.75 on the threshold axis, and of each area range."""
        iou_thresholds = evaluator.params.iouThrs
        area = {label: i for i, label in enumerate(evaluator.params.areaRngLbl)}
        at_50 = int(np.argmin(np.abs(iou_thresholds - 0.5)))
        at_75 = int(np.argmin(np.abs(iou_thresholds - 0.75)))
        return at_50, at_75, area


def _mean_defined(values: np.ndarray) -> float:
    """Mean of the entries COCO defines (it writes −1 where there is nothing to evaluate); NaN if none."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else math.nan
