"""The panoptic task (kMaX-DeepLab): K cluster centres, each a mask and a class; mask-wise merging gives the
panoptic map (class·label_divisor + instance) and a threshold-free pass the semantic map.

Trains on panoptic labels with Hungarian matching and the kMaX losses (``TrainConfig.loss``); evaluates PQ / SQ /
RQ (all, things, stuff) and mIoU from the threshold-free semantic map, as deeplab2 computes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from polymax.config.model import ModelConfig, TaskConfig
from polymax.geometry import Geometry
from polymax.losses.kmax_criterion import KMaXCriterion
from polymax.metrics import PanopticMetrics, SemanticMetrics
from polymax.metrics.class_table import ClassTable, class_table
from polymax.model.heads.classification import ClassHead
from polymax.structures import SegmentationOutput, SegmentationResult, SegmentInfo, Targets, TaskOutput
from polymax.tasks.base import LabelField, Picture, Saver, Task
from polymax.tasks.keys import with_key
from polymax.tasks.segmentation import (
    INSTANCES_TITLE,
    build_postprocessor,
    class_key,
    kmax_loss_options,
    panoptic_classes,
    perfect_segmentation,
    require_classes,
    save_uint16,
    segment_classes,
    semantic_picture,
    write_semantic,
)
from polymax.tasks.visualize import colorize_panoptic

if TYPE_CHECKING:
    from polymax.data.sample import Sample


class PanopticTask(Task):
    name = "panoptic"
    official_format = "coco_panoptic"
    labels = (LabelField("panoptic", "ids"), LabelField("semantic", "ids"))
    output_type = SegmentationOutput
    result_type = SegmentationResult
    loss_section = "loss"
    export_names = ("mask_logits", "class_logits")
    needs_classes = True

    def build_head(self, config: ModelConfig, task: TaskConfig, *, num_predictions: int,
                   num_queries: int) -> nn.Module:
        return ClassHead(num_classes=require_classes(config, task), in_channels=config.kmax_decoder.hidden,
                         num_predictions=num_predictions)

    def build_criterion(self, config: ModelConfig, task: TaskConfig, options) -> nn.Module:
        info = config.dataset
        return KMaXCriterion(num_classes=info.num_classes, thing_classes=info.thing_classes,
                             ignore_label=info.ignore_label, label_divisor=info.label_divisor,
                             max_thing_id=info.max_thing_id, matching="hungarian", **kmax_loss_options(options))

    def mask_classes(self, panoptic: Tensor, crowd: Tensor | None, config: ModelConfig) -> list[int]:
        """Every segment (things and stuff)."""
        return sorted(category for category, _ in segment_classes(panoptic, crowd, config))

    def build_metrics(self, config: ModelConfig, task: TaskConfig) -> PanopticTaskMetrics:
        return PanopticTaskMetrics(config)

    def build_decoder(self, config: ModelConfig, task: TaskConfig) -> PanopticDecoder:
        return PanopticDecoder(config)

    def perfect_output(self, targets: Targets, config: ModelConfig, task: TaskConfig, *, num_queries: int,
                       confidence: float = 50.0) -> SegmentationOutput:
        info = config.dataset
        return perfect_segmentation(targets.panoptic, num_queries=num_queries, num_classes=info.num_classes,
                                    ignore_label=info.ignore_label, label_divisor=info.label_divisor,
                                    confidence=confidence)

    def pictures(self, result: SegmentationResult, config: ModelConfig) -> list[Picture]:
        info = config.dataset
        rgb = colorize_panoptic(result.panoptic, colors=info.colors, num_classes=info.num_classes,
                                label_divisor=info.label_divisor, ignore_label=info.ignore_label)
        key = class_key([panoptic_classes(result, config)], config, title=INSTANCES_TITLE)
        return [Picture(f"{self.name}_color", self.name, with_key(rgb, key)), semantic_picture(result, config)]

    def write_files(self, result: SegmentationResult, config: ModelConfig, save: Saver, *, base_name: str,
                    source: str | None, npy: bool) -> None:
        """NAME_semantic.png; NAME_panoptic.png (16-bit segment ids 1..N, 0 = void) and NAME_segments.json (a
        COCO-panoptic style record of those segments)."""
        write_semantic(result, save)
        ids = segment_id_map(result)
        save(f"{self.name}.png", lambda path: save_uint16(ids, path))
        record = segments_record(result, config, file_name=f"{base_name}_{self.name}.png", source=source)
        save("segments.json", lambda path: path.write_text(json.dumps(record, indent=2) + "\n"))

    def trivial_result(self, config: ModelConfig, task: TaskConfig,
                       train: Sequence[Sample]) -> Callable[[Sample], SegmentationResult]:
        """The training samples' majority class everywhere, as one segment (instance 1 if it is a thing)."""
        info = config.dataset
        category = majority_class(train, info.num_classes)

        def predict(sample: Sample) -> SegmentationResult:
            size = tuple(sample.image.shape[-2:])
            panoptic, segment = whole_image_segment(category, info, size)
            return SegmentationResult(task=self.name, size=size, semantic=np.full(size, category, dtype=np.int32),
                                      panoptic=panoptic, segments=[segment])
        return predict

    def ground_truth_result(self, sample: Sample, config: ModelConfig) -> SegmentationResult:
        semantic = sample.semantic.numpy().astype(np.int32)
        return SegmentationResult(task=self.name, size=tuple(semantic.shape), semantic=semantic,
                                  panoptic=sample.panoptic.numpy().astype(np.int64))

    def picture_map(self, result: SegmentationResult, config: ModelConfig, *,
                    reference: SegmentationResult | None = None) -> np.ndarray:
        return panoptic_map(result.panoptic, config)

    def key(self, results: Sequence[SegmentationResult], config: ModelConfig, *,
            reference: SegmentationResult | None = None, height: int = 150):
        return class_key([panoptic_classes(r, config) for r in results], config, title=INSTANCES_TITLE)

    def cluster_captions(self, output: TaskOutput, config: ModelConfig) -> list[tuple[float, str]]:
        """Each cluster's class (the per-pixel baseline has no class logits: cluster indices)."""
        if getattr(output, "class_logits", None) is None:
            return super().cluster_captions(output, config)
        return class_captions(output.class_logits, config)


def majority_class(train: Sequence[Sample], num_classes: int, among: Sequence[int] | None = None) -> int:
    """The most frequent class of the samples' semantic labels (void pixels not counted), of ``among`` if given."""
    counts = torch.bincount(torch.cat([sample.semantic.flatten() for sample in train]), minlength=num_classes)
    candidates = torch.as_tensor(range(num_classes) if among is None else among, dtype=torch.int64)
    return int(candidates[counts[candidates].argmax()])


def whole_image_segment(category: int, info, size: tuple[int, int]) -> tuple[np.ndarray, SegmentInfo]:
    """One segment of ``category`` covering an image of ``size`` (instance 1 if it is a thing, score 1): its
    (H, W) panoptic map and its SegmentInfo — the trivial baselines' answer."""
    height, width = size
    is_thing = category in info.thing_classes
    panoptic_id = category * info.label_divisor + int(is_thing)
    segment = SegmentInfo(id=1, panoptic_id=panoptic_id, category=category, category_name=info.class_names[category],
                          is_thing=is_thing, area=height * width, bbox=(0, 0, width, height), score=1.0)
    return np.full(size, panoptic_id, dtype=np.int64), segment


def panoptic_map(panoptic: np.ndarray, config: ModelConfig) -> np.ndarray:
    """(H, W) class·label_divisor + instance → (H, W, 3) uint8: class colours, instances shaded apart."""
    info = config.dataset
    return colorize_panoptic(panoptic, colors=info.colors, num_classes=info.num_classes,
                             label_divisor=info.label_divisor, ignore_label=info.ignore_label)


def class_captions(class_logits: Tensor, config: ModelConfig) -> list[tuple[float, str]]:
    """(1, K, C + 1) class logits → each cluster's most likely real class and its confidence, e.g. 'wall 0.93';
    sorted by class, the most confident first within a class."""
    names = config.dataset.class_names
    probabilities = torch.softmax(class_logits[0].float(), dim=-1)[:, :-1]                 # (K, C), void dropped
    confidence, classes = probabilities.max(dim=-1)
    return [(int(c) - float(p), f"{names[int(c)]} {float(p):.2f}") for c, p in zip(classes, confidence)]


class PanopticDecoder:
    """One image's final output → semantic map, panoptic map and measured segments at the original size.

    Merging runs at the network's input resolution (as deeplab2 evaluates: padded input, merged, cropped), so
    its area limits mean what they mean in training; label maps are then cropped and resized by nearest
    neighbours onto the original image.
    """

    def __init__(self, config: ModelConfig, *, things_only: bool = False, task: str = "panoptic") -> None:
        self.postprocess = build_postprocessor(config)
        self.info = config.dataset
        self.things_only = things_only
        self.task = task

    def __call__(self, output: SegmentationOutput, geometry: Geometry) -> SegmentationResult:
        maps = self.postprocess(output.mask_logits, output.class_logits, geometry.network)[0]
        panoptic = geometry.labels(maps.panoptic).cpu().numpy().astype(np.int64)
        segments = measure_segments(panoptic, maps.segments, self.info.class_names)
        if self.things_only:
            segments = [s for s in segments if s.is_thing]
            keep = np.isin(panoptic, [s.panoptic_id for s in segments])
            panoptic = np.where(keep, panoptic, self.info.ignore_label * self.info.label_divisor)
            segments = [SegmentInfo(**{**vars(s), "id": index + 1}) for index, s in enumerate(segments)]
        semantic = geometry.labels(maps.semantic).cpu().numpy().astype(np.int32)
        return SegmentationResult(task=self.task, size=geometry.original, semantic=semantic, panoptic=panoptic,
                                  segments=segments)


class PanopticTaskMetrics:
    """PQ / SQ / RQ (all, things, stuff) and mIoU (per-class IoUs stay in ``semantic``)."""

    def __init__(self, config: ModelConfig) -> None:
        info = config.dataset
        self.info = info
        self.panoptic = PanopticMetrics(num_classes=info.num_classes, thing_classes=info.thing_classes,
                                        label_divisor=info.label_divisor, ignore_label=info.ignore_label)
        self.semantic = SemanticMetrics(num_classes=info.num_classes, ignore_label=info.ignore_label)

    def update(self, result: SegmentationResult, targets: Targets, index: int) -> None:
        self.semantic.update(result.semantic[None], targets.semantic[index: index + 1])
        crowd = None if targets.crowd is None else targets.crowd[index: index + 1]
        self.panoptic.update(result.panoptic[None], targets.panoptic[index: index + 1], crowd)

    def compute(self) -> dict[str, float]:
        return {**self.panoptic.compute(), **summary(self.semantic.compute())}

    def per_class(self) -> ClassTable:
        """PQ / SQ / RQ, TP / FP / FN and the semantic map's IoU of every class."""
        columns = dict(self.panoptic.per_class())
        columns["iou"] = self.semantic.per_class_iou()
        return class_table("panoptic", columns, names=self.info.class_names,
                           things=[c in self.info.thing_classes for c in range(self.info.num_classes)])


def summary(semantic_values: dict[str, float]) -> dict[str, float]:
    """The headline semantic numbers (the per-class IoUs stay in the metric object)."""
    return {k: v for k, v in semantic_values.items() if not k.startswith("iou_")}


def measure_segments(panoptic: np.ndarray, segments, class_names: Sequence[str]) -> list[SegmentInfo]:
    """The post-processor's segments that survive at the original size, with area and bbox measured there."""
    from scipy import ndimage

    values, inverse = np.unique(panoptic, return_inverse=True)           # values[inverse] == panoptic
    inverse = inverse.reshape(panoptic.shape)
    areas = np.bincount(inverse.ravel(), minlength=len(values))
    boxes = ndimage.find_objects(inverse.astype(np.int32) + 1)            # one (rows, cols) slice per value
    position = {int(value): index for index, value in enumerate(values)}
    kept: list[SegmentInfo] = []
    for segment in segments:
        index = position.get(int(segment.id))
        if index is None or areas[index] == 0:
            continue   # the segment lay in the padding, or vanished when resized to the original size
        rows, cols = boxes[index]
        name = class_names[segment.category] if segment.category < len(class_names) else str(segment.category)
        kept.append(SegmentInfo(id=len(kept) + 1, panoptic_id=int(segment.id), category=int(segment.category),
                                category_name=name, is_thing=bool(segment.is_thing), area=int(areas[index]),
                                bbox=(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start),
                                score=float(segment.score) if math.isfinite(segment.score) else 0.0))
    return kept


def segment_id_map(result: SegmentationResult) -> np.ndarray:
    """(H, W) int64: the 1-based id of each pixel's segment in ``result.segments``, 0 for void."""
    ids = np.zeros(result.panoptic.shape, dtype=np.int64)
    for segment in result.segments or []:
        ids[result.panoptic == segment.panoptic_id] = segment.id
    return ids


def segments_record(result: SegmentationResult, config: ModelConfig, *, file_name: str,
                    source: str | None = None) -> dict:
    """The COCO-panoptic style JSON record of one image: ``segments_info`` with id, category_id (the model's
    class index; ``label_id`` too, as the Hugging Face OneFormer API names it), category_name, isthing, iscrowd,
    area, bbox (x, y, w, h), score, panoptic_id."""
    info = config.dataset
    return {
        "image": source,
        "file_name": file_name,
        "height": int(result.size[0]),
        "width": int(result.size[1]),
        "label_divisor": info.label_divisor,
        "segments_info": [
            {"id": s.id, "label_id": s.category, "category_id": s.category, "category_name": s.category_name,
             "isthing": int(s.is_thing),
             "iscrowd": 0, "area": s.area, "bbox": list(s.bbox), "score": round(s.score, 6),
             "panoptic_id": s.panoptic_id}
            for s in result.segments or []],
        "categories": [
            {"id": index, "name": name, "isthing": int(index in info.thing_classes),
             "color": list(info.colors[index]) if index < len(info.colors) else None}
            for index, name in enumerate(info.class_names)],
    }
