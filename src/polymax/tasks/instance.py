"""The instance task (kMaX-DeepLab's instance output): the panoptic clusters, of which the thing segments are the
instances, each with its class confidence as score. Trains like the panoptic task (Hungarian matching, the kMaX
losses on panoptic labels); evaluates COCO mask AP with pycocotools (the ``coco`` extra).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from polymax.config.model import ModelConfig, TaskConfig
from polymax.metrics import InstanceMetrics
from polymax.structures import SegmentationResult, Targets
from polymax.tasks.base import LabelField, Picture, Saver, Task
from polymax.tasks.keys import with_key
from polymax.tasks.panoptic import PanopticDecoder, PanopticTask, segment_id_map, segments_record
from polymax.tasks.segmentation import INSTANCES_TITLE, class_key, panoptic_classes, save_uint16, segment_classes
from polymax.tasks.visualize import colorize_panoptic

if TYPE_CHECKING:
    from polymax.data.sample import Sample


class InstanceTask(PanopticTask):
    """The panoptic task's head, criterion, perfect output, colour map, key and cluster captions; its own
    targets (things), decoding, metrics, pictures and files."""

    name = "instance"
    labels = (LabelField("panoptic", "ids"),)
    trivial_result = Task.trivial_result          # the demo has no instance baseline (yet)

    def mask_classes(self, panoptic: Tensor, crowd: Tensor | None, config: ModelConfig) -> list[int]:
        """Thing segments only (stuff is not a target)."""
        return sorted(category for category, thing in segment_classes(panoptic, crowd, config) if thing)

    def build_metrics(self, config: ModelConfig, task: TaskConfig) -> InstanceTaskMetrics:
        return InstanceTaskMetrics(config)

    def build_decoder(self, config: ModelConfig, task: TaskConfig) -> PanopticDecoder:
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


class InstanceTaskMetrics:
    """COCO mask AP (ap, ap50, ap75, ap_small / medium / large) of the thing segments."""

    def __init__(self, config: ModelConfig) -> None:
        info = config.dataset
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
