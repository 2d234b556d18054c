"""The instance task (kMaX-DeepLab's instance output): the panoptic clusters, of which the thing segments are the
instances, each with its class confidence as score. Trains like the panoptic task (Hungarian matching, the kMaX
losses on panoptic labels); evaluates COCO mask AP with pycocotools (the ``coco`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from polymax.config.model import ModelConfig, TaskConfig
from polymax.geometry import Geometry, resize_to_input
from polymax.metrics import InstanceMetrics
from polymax.metrics.class_table import ClassTable, class_table
from polymax.structures import SegmentationOutput, SegmentationResult, Targets
from polymax.tasks.base import LabelField, Picture, Saver
from polymax.tasks.keys import with_key
from polymax.tasks.panoptic import (
    PanopticDecoder,
    PanopticTask,
    majority_class,
    measure_segments,
    segment_id_map,
    segments_record,
    whole_image_segment,
)
from polymax.tasks.panoptic_merge import Segment
from polymax.tasks.segmentation import (
    INSTANCES_TITLE,
    class_key,
    is_oneformer,
    oneformer_criterion,
    panoptic_classes,
    save_uint16,
    segment_classes,
)
from polymax.tasks.visualize import colorize_panoptic

if TYPE_CHECKING:
    from polymax.data.sample import Sample


class InstanceTask(PanopticTask):
    """The panoptic task's head, criterion, perfect output, colour map, key and cluster captions; its own
    targets (things), decoding, metrics, pictures and files."""

    name = "instance"
    official_format = "coco_results"
    labels = (LabelField("panoptic", "ids"),)

    def trivial_result(self, config: ModelConfig, task: TaskConfig,
                       train: Sequence[Sample]) -> Callable[[Sample], SegmentationResult]:
        """The training samples' most frequent thing class as one instance covering the image, score 1."""
        info = config.dataset
        category = majority_class(train, info.num_classes, among=info.thing_classes)

        def predict(sample: Sample) -> SegmentationResult:
            size = tuple(sample.image.shape[-2:])
            panoptic, segment = whole_image_segment(category, info, size)
            return SegmentationResult(task=self.name, size=size, panoptic=panoptic, segments=[segment])
        return predict

    def mask_classes(self, panoptic: Tensor, crowd: Tensor | None, config: ModelConfig) -> list[int]:
        """Thing segments only (stuff is not a target)."""
        return sorted(category for category, thing in segment_classes(panoptic, crowd, config) if thing)

    def build_metrics(self, config: ModelConfig, task: TaskConfig) -> InstanceTaskMetrics:
        return InstanceTaskMetrics(config)

    def build_criterion(self, config: ModelConfig, task: TaskConfig, options) -> nn.Module:
        """The panoptic task's criterion; OneFormer: the thing segments only, stuff pixels void."""
        if is_oneformer(config, task):
            return oneformer_criterion(config, self.name, options)
        return super().build_criterion(config, task, options)

    def build_decoder(self, config: ModelConfig, task: TaskConfig) -> PanopticDecoder | OneFormerInstanceDecoder:
        if is_oneformer(config, task):
            return OneFormerInstanceDecoder(config)
        return PanopticDecoder(config, things_only=True, task=self.name)

    def pictures(self, result: SegmentationResult, config: ModelConfig) -> list[Picture]:
        info = config.dataset
        rgb = colorize_panoptic(result.panoptic, colors=info.colors, num_classes=info.num_classes,
                                label_divisor=info.label_divisor, ignore_label=info.ignore_label)
        key = class_key([panoptic_classes(result, config)], config, title=INSTANCES_TITLE)
        return [Picture("instance_color", "instances", with_key(rgb, key))]

    def write_files(self, result: SegmentationResult, config: ModelConfig, save: Saver, *, base_name: str,
                    source: str | None, npy: bool) -> None:
        """NAME_instance.png (16-bit instance ids 1..N, 0 = background) and NAME_instances.json (id, class,
        score, area, bbox of each)."""
        ids = segment_id_map(result)
        save("instance.png", lambda path: save_uint16(ids, path))
        record = segments_record(result, config, file_name=f"{base_name}_instance.png", source=source)
        save("instances.json", lambda path: path.write_text(json.dumps(record, indent=2) + "\n"))

    def ground_truth_result(self, sample: Sample, config: ModelConfig) -> SegmentationResult:
        """The panoptic labels of the thing pixels; stuff becomes void, as in a decoded instance result."""
        info = config.dataset
        panoptic = sample.panoptic.numpy().astype(np.int64)
        things = np.isin(panoptic // info.label_divisor, info.thing_classes)
        panoptic = np.where(things, panoptic, info.ignore_label * info.label_divisor)
        return SegmentationResult(task=self.name, size=tuple(panoptic.shape), panoptic=panoptic)


class OneFormerInstanceDecoder:
    """OneFormer's instance inference on kMaX clusters: each cluster's mask is the pixels whose most likely
    cluster it is (the k-means assignment, so masks never overlap); the thing clusters — whose most likely class
    of the C + 1 (void included) is a thing class — are the instance candidates, scored by that class
    probability × the mean mask probability inside the mask; the ``top_k`` best non-empty ones are the instances.
    Stuff and void clusters are left out (their pixels are void). Runs at the network input."""

    def __init__(self, config: ModelConfig, *, top_k: int = 100) -> None:
        self.info = config.dataset
        self.top_k = min(top_k, self.info.label_divisor - 1)

    def __call__(self, output: SegmentationOutput, geometry: Geometry) -> SegmentationResult:
        info = self.info
        probabilities = resize_to_input(output.mask_logits.float(), geometry.network)[0].softmax(dim=0)  # (K,H,W)
        count = probabilities.shape[0]
        masks = torch.nn.functional.one_hot(probabilities.argmax(dim=0), count).permute(2, 0, 1)  # (K, H, W)
        area = masks.sum(dim=(1, 2))
        mean_probability = (probabilities * masks).sum(dim=(1, 2)) / area.clamp(min=1)
        class_score, which = output.class_logits[0].float().softmax(dim=-1).max(dim=-1)       # (K,) over C + 1
        is_thing = torch.isin(which, torch.as_tensor(info.thing_classes, dtype=torch.int64))
        score = class_score * mean_probability
        kept = [k for k in score.argsort(descending=True).tolist() if area[k] > 0 and is_thing[k]][:self.top_k]
        void = info.ignore_label * info.label_divisor
        panoptic = torch.full(probabilities.shape[1:], void, dtype=torch.int64)
        segments = []
        for rank, k in enumerate(kept):
            category = int(which[k])
            panoptic_id = category * info.label_divisor + rank + 1
            panoptic[masks[k].bool()] = panoptic_id
            segments.append(Segment(id=panoptic_id, category=category, is_thing=True, area=int(area[k]),
                                    score=float(score[k]), slot=k))
        panoptic = geometry.labels(panoptic).cpu().numpy().astype(np.int64)
        segments = measure_segments(panoptic, segments, info.class_names)
        semantic = np.where(panoptic == void, info.ignore_label, panoptic // info.label_divisor).astype(np.int32)
        return SegmentationResult(task="instance", size=geometry.original, semantic=semantic, panoptic=panoptic,
                                  segments=segments)


class InstanceTaskMetrics:
    """COCO mask AP (ap, ap50, ap75, ap_small / medium / large) of the thing segments."""

    def __init__(self, config: ModelConfig) -> None:
        info = config.dataset
        self.names = info.class_names
        self.metric = InstanceMetrics(thing_classes=info.thing_classes, label_divisor=info.label_divisor)

    def update(self, result: SegmentationResult, targets: Targets, index: int) -> None:
        import numpy as np

        segments = result.segments or []
        masks = np.stack([result.panoptic == s.panoptic_id for s in segments]) if segments else \
            np.zeros((0, *result.size), dtype=bool)
        prediction = {"masks": masks, "labels": np.array([s.category for s in segments], dtype=np.int64),
                      "scores": np.array([s.score for s in segments], dtype=np.float64)}
        crowd = None if targets.crowd is None else targets.crowd[index: index + 1]
        self.metric.update([prediction], targets.panoptic[index: index + 1], crowd)

    def compute(self) -> dict[str, float]:
        return self.metric.compute()

    def per_class(self) -> ClassTable:
        """Mask AP, AP50 and AP75 of every thing class."""
        return class_table("instance", self.metric.per_class(), names=self.names, classes=self.metric.thing_classes)
