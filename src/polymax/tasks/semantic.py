"""The semantic task (PolyMaX): K = C cluster centres with the fixed assignment query i ↔ class i, so the
per-pixel probability over clusters *is* the class distribution and the semantic map is argmax_K P.

Trains with the kMaX losses under fixed matching (``TrainConfig.loss``); the per-pixel DeepLabv3+ baseline uses
a 1×1 class head and cross-entropy. Evaluates mIoU and pixel accuracy. Flip TTA averages the class
probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.config.model import ModelConfig, TaskConfig
from polymax.errors import UserError
from polymax.geometry import Geometry, resize_to_input
from polymax.losses.polymax_criterion import PerPixelSemanticCriterion, SemanticCriterion
from polymax.metrics import SemanticMetrics
from polymax.metrics.class_table import ClassTable, class_table
from polymax.model.heads.classification import ClassHead
from polymax.model.heads.per_pixel import PerPixelClassHead
from polymax.model.heads.semantic import SemanticClusterHead
from polymax.structures import SegmentationOutput, SegmentationResult, Targets, TaskOutput
from polymax.tasks.base import LabelField, Picture, Saver, Task
from polymax.tasks.panoptic import class_captions, majority_class, summary
from polymax.tasks.segmentation import (
    class_key,
    class_weighted_probabilities,
    derived_targets,
    is_oneformer,
    kmax_loss_options,
    one_hot_logits,
    oneformer_criterion,
    perfect_segmentation,
    require_classes,
    segment_classes,
    semantic_picture,
    write_semantic,
)
from polymax.tasks.visualize import colorize_semantic

if TYPE_CHECKING:
    from polymax.data.sample import Sample


class SemanticTask(Task):
    name = "semantic"
    official_format = "label_png"
    labels = (LabelField("semantic", "ids"),)
    output_type = SegmentationOutput
    result_type = SegmentationResult
    loss_section = "loss"
    export_names = ("mask_logits", "class_logits")
    needs_classes = True

    def build_head(self, config: ModelConfig, task: TaskConfig, *, num_predictions: int,
                   num_queries: int) -> nn.Module:
        num_classes = require_classes(config, task)
        if is_oneformer(config, task):     # OneFormer: the class head over the N shared clusters
            return ClassHead(num_classes=num_classes, in_channels=config.kmax_decoder.hidden,
                             num_predictions=num_predictions)
        if num_queries != num_classes:
            where = f"tasks.{task.name}.num_queries" if task.num_queries else "kmax_decoder.num_queries"
            raise UserError(f"a PolyMaX semantic model needs one query per class: {where} is {num_queries} but "
                            f"the data set has {num_classes} classes; set it to {num_classes}")
        return SemanticClusterHead(num_classes=num_classes, in_channels=config.kmax_decoder.hidden,
                                   num_predictions=num_predictions)

    def build_baseline_head(self, config: ModelConfig, task: TaskConfig, *, in_channels: int) -> nn.Module:
        return PerPixelClassHead(in_channels=in_channels, num_classes=require_classes(config, task))

    def build_criterion(self, config: ModelConfig, task: TaskConfig, options) -> nn.Module:
        info = config.dataset
        common = {"num_classes": info.num_classes, "ignore_label": info.ignore_label,
                  "label_divisor": info.label_divisor}
        if config.architecture == "deeplabv3plus":
            return PerPixelSemanticCriterion(**common)
        if is_oneformer(config, task):
            return oneformer_criterion(config, self.name, options)
        return SemanticCriterion(**common, **kmax_loss_options(options))

    def perfect_output(self, targets: Targets, config: ModelConfig, task: TaskConfig, *, num_queries: int,
                       confidence: float = 50.0) -> SegmentationOutput:
        """Cluster c is class c (K = C): its mask is where the label is c, its class c if present, else void.
        OneFormer: cluster k is the k-th class present (instances merged)."""
        info = config.dataset
        if is_oneformer(config, task):
            merged = derived_targets(self.name, targets, thing_classes=info.thing_classes,
                                     ignore_label=info.ignore_label, label_divisor=info.label_divisor)
            return perfect_segmentation(merged.panoptic, num_queries=num_queries, num_classes=info.num_classes,
                                        ignore_label=info.ignore_label, label_divisor=info.label_divisor,
                                        confidence=confidence)
        labels = targets.semantic.clone()
        labels[labels == info.ignore_label] = 0                     # void pixels: any cluster (ignored)
        mask_logits = one_hot_logits(labels, num_queries, confidence).permute(0, 3, 1, 2)
        present = torch.stack([torch.isin(torch.arange(num_queries), s.unique()) for s in targets.semantic])
        classes = torch.where(present, torch.arange(num_queries), torch.tensor(info.num_classes))
        return SegmentationOutput(mask_logits=mask_logits, pixel_features=F.normalize(mask_logits, dim=1),
                                  class_logits=one_hot_logits(classes, info.num_classes + 1, confidence))

    def mask_classes(self, panoptic: Tensor, crowd: Tensor | None, config: ModelConfig) -> list[int]:
        """One mask per class present (instances merged)."""
        return sorted({category for category, _ in segment_classes(panoptic, crowd, config)})

    def build_metrics(self, config: ModelConfig, task: TaskConfig) -> SemanticTaskMetrics:
        return SemanticTaskMetrics(config)

    def build_decoder(self, config: ModelConfig, task: TaskConfig):
        return decode_oneformer_semantic if is_oneformer(config, task) else decode_semantic

    def pictures(self, result: SegmentationResult, config: ModelConfig) -> list[Picture]:
        return [semantic_picture(result, config)]

    def write_files(self, result: SegmentationResult, config: ModelConfig, save: Saver, *, base_name: str,
                    source: str | None, npy: bool) -> None:
        write_semantic(result, save)

    def tta_values(self, output: TaskOutput) -> Tensor:
        """Class probabilities (B, C, h, w): softmax over the K = C clusters (or the baseline's class logits);
        OneFormer: the class-weighted cluster probabilities."""
        # K ≠ C only on OneFormer (N shared clusters); PolyMaX's K = C head has one cluster per class.
        if output.class_logits is not None and output.mask_logits.shape[1] != output.class_logits.shape[-1] - 1:
            return class_weighted_probabilities(output.mask_logits, output.class_logits)
        return torch.softmax(output.mask_logits.float(), dim=1)

    def trivial_result(self, config: ModelConfig, task: TaskConfig,
                       train: Sequence[Sample]) -> Callable[[Sample], SegmentationResult]:
        """The training samples' majority class at every pixel."""
        category = majority_class(train, config.dataset.num_classes)

        def predict(sample: Sample) -> SegmentationResult:
            size = tuple(sample.image.shape[-2:])
            return SegmentationResult(task=self.name, size=size, semantic=np.full(size, category, dtype=np.int32))
        return predict

    def ground_truth_result(self, sample: Sample, config: ModelConfig) -> SegmentationResult:
        semantic = sample.semantic.numpy().astype(np.int32)
        return SegmentationResult(task=self.name, size=tuple(semantic.shape), semantic=semantic)

    def picture_map(self, result: SegmentationResult, config: ModelConfig, *,
                    reference: SegmentationResult | None = None) -> np.ndarray:
        info = config.dataset
        return colorize_semantic(result.semantic, colors=info.colors, num_classes=info.num_classes,
                                 ignore_label=info.ignore_label)

    def key(self, results: Sequence[SegmentationResult], config: ModelConfig, *,
            reference: SegmentationResult | None = None, height: int = 150):
        return class_key([r.semantic for r in results], config)

    def cluster_captions(self, output: TaskOutput, config: ModelConfig) -> list[tuple[float, str]]:
        """K = C: cluster i is class i, in class order (OneFormer: each cluster's most likely class)."""
        if is_oneformer(config):
            return class_captions(output.class_logits, config)
        return [(float(i), name) for i, name in enumerate(config.dataset.class_names)]


def decode_oneformer_semantic(output: SegmentationOutput, geometry: Geometry) -> SegmentationResult:
    """OneFormer's semantic map: argmax over classes of the class-weighted cluster probabilities, on the network
    input, then nearest onto the image."""
    logits = resize_to_input(output.mask_logits.float(), geometry.network)
    labels = class_weighted_probabilities(logits, output.class_logits).argmax(dim=1)[0]
    semantic = geometry.labels(labels).cpu().numpy().astype("int32")
    return SegmentationResult(task="semantic", size=geometry.original, semantic=semantic)


def decode_semantic(output: SegmentationOutput, geometry: Geometry) -> SegmentationResult:
    """The class is the argmax cluster of the logits resized onto the network input, then nearest onto the image."""
    labels = resize_to_input(output.mask_logits.float(), geometry.network).argmax(dim=1)[0]
    semantic = geometry.labels(labels).cpu().numpy().astype("int32")
    return SegmentationResult(task="semantic", size=geometry.original, semantic=semantic)


class SemanticTaskMetrics:
    """mIoU and pixel accuracy (per-class IoUs stay in ``semantic``)."""

    def __init__(self, config: ModelConfig) -> None:
        info = config.dataset
        self.names = info.class_names
        self.semantic = SemanticMetrics(num_classes=info.num_classes, ignore_label=info.ignore_label)

    def update(self, result: SegmentationResult, targets: Targets, index: int) -> None:
        self.semantic.update(result.semantic[None], targets.semantic[index: index + 1])

    def compute(self) -> dict[str, float]:
        return summary(self.semantic.compute())

    def per_class(self) -> ClassTable:
        """The IoU of every class."""
        return class_table("semantic", {"iou": self.semantic.per_class_iou()}, names=self.names)
