"""What the three segmentation tasks (panoptic, semantic, instance) share: the kMaX loss options, the class head,
the semantic picture and file, and the panoptic post-processor built from a config.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from polymax.config.model import ModelConfig, TaskConfig
from polymax.errors import UserError
from polymax.losses.kmax_criterion import KMaXLossWeights
from polymax.structures import SegmentationOutput, SegmentationResult
from polymax.tasks.base import Picture, Saver
from polymax.tasks.keys import legend, with_key
from polymax.tasks.panoptic_merge import PanopticPostProcessor
from polymax.tasks.visualize import colorize_semantic


def one_hot_logits(index: Tensor, count: int, confidence: float) -> Tensor:
    """(...,) int64 indices → (..., count) logits: +confidence at the index, −confidence elsewhere."""
    return (torch.nn.functional.one_hot(index, count).float() * 2 - 1) * confidence


def perfect_segmentation(panoptic: Tensor, *, num_queries: int, num_classes: int, ignore_label: int,
                         label_divisor: int, confidence: float) -> SegmentationOutput:
    """Cluster k = the k-th segment (sorted id) of each image's panoptic map, with its class; unused clusters
    are void. Void pixels belong to no segment (they go to the last cluster, which the losses ignore there).

    panoptic: (B, H, W) ids class·label_divisor + instance → mask_logits (B, K, H, W), class_logits (B, K, C+1).
    """
    batch, height, width = panoptic.shape
    assignment = torch.full((batch, height, width), num_queries - 1, dtype=torch.int64)
    classes = torch.full((batch, num_queries), num_classes, dtype=torch.int64)        # void
    for b in range(batch):
        ids = [int(i) for i in panoptic[b].unique() if int(i) // label_divisor != ignore_label]
        if len(ids) > num_queries:
            raise ValueError(f"{len(ids)} segments do not fit {num_queries} clusters")
        for slot, segment in enumerate(ids):
            assignment[b][panoptic[b] == segment] = slot
            classes[b, slot] = segment // label_divisor
    mask_logits = one_hot_logits(assignment, num_queries, confidence).permute(0, 3, 1, 2)
    features = torch.nn.functional.normalize(mask_logits, dim=1)
    return SegmentationOutput(mask_logits=mask_logits, pixel_features=features,
                              class_logits=one_hot_logits(classes, num_classes + 1, confidence))


def segment_classes(panoptic: Tensor, crowd: Tensor | None, config: ModelConfig) -> list[tuple[int, bool]]:
    """(class, is_thing) of every segment of one panoptic map (H, W), in id order; void and crowd skipped."""
    info = config.dataset
    found = []
    for segment in panoptic.unique().tolist():
        category = segment // info.label_divisor
        if category == info.ignore_label or category >= info.num_classes:
            continue
        if crowd is not None and bool(crowd[panoptic == segment].any()):
            continue
        found.append((category, category in info.thing_classes))
    return found


def kmax_loss_options(options) -> dict:
    """The kMaX criterion's keyword arguments from the training config's ``loss`` section (LossOptions)."""
    weights = KMaXLossWeights(pq_class=options.class_weight, pq_dice=options.dice_weight,
                              mask_id=options.mask_id_weight, instance_discrimination=options.inst_disc_weight,
                              semantic=options.semantic_weight)
    return dict(weights=weights, inst_disc_k=options.inst_disc_samples,
                inst_disc_sample_temperature=options.inst_disc_temperature, semantic_top_k=options.semantic_top_k,
                semantic_sample_k=options.semantic_samples,
                semantic_small_instance_area=options.semantic_small_instance_area,
                semantic_small_instance_weight=options.semantic_small_instance_weight)


def require_classes(config: ModelConfig, task: TaskConfig) -> int:
    """The number of classes, or a one-line error for a label space without classes."""
    if config.dataset.num_classes < 1:
        raise UserError(f"preset {config.preset!r}: the {task.name} task needs a data set with classes; "
                        "pass dataset=DatasetInfo(...)")
    return config.dataset.num_classes


def build_postprocessor(config: ModelConfig) -> PanopticPostProcessor:
    """Mask-wise merging configured by ``config.postprocess`` and ``config.dataset``."""
    pp, info = config.postprocess, config.dataset
    return PanopticPostProcessor(
        thing_classes=info.thing_classes, num_classes=info.num_classes, ignore_label=info.ignore_label,
        label_divisor=info.label_divisor, pixel_confidence=pp.pixel_confidence,
        thing_confidence=pp.thing_confidence, stuff_confidence=pp.stuff_confidence, overlap=pp.overlap,
        reorder_class_weight=pp.reorder_class_weight, reorder_mask_weight=pp.reorder_mask_weight,
        thing_area_limit=pp.thing_area_limit, stuff_area_limit=pp.stuff_area_limit)


def semantic_picture(result: SegmentationResult, config: ModelConfig) -> Picture:
    info = config.dataset
    rgb = colorize_semantic(result.semantic, colors=info.colors, num_classes=info.num_classes,
                            ignore_label=info.ignore_label)
    return Picture("semantic_color", "semantic", with_key(rgb, class_key([result.semantic], config)))


def class_key(class_maps: list[np.ndarray], config: ModelConfig, *, title: str = "classes"):
    """The legend of the classes that appear in any of the (H, W) class maps, and of void (black: the ignore
    label, or no segment) when a map has void pixels."""
    info = config.dataset
    present: set[int] = set()
    void = False
    for classes in class_maps:
        values = np.unique(classes)
        real = (values >= 0) & (values < info.num_classes) & (values != info.ignore_label)
        present |= {int(v) for v in values[real]}
        void |= bool((~real).any())
    return legend(info.class_names, info.colors, present=sorted(present), void=void, title=title)


def panoptic_classes(result: SegmentationResult, config: ModelConfig) -> np.ndarray:
    """(H, W) the class of every pixel of a panoptic (or instance) map; void pixels carry the ignore label."""
    return result.panoptic // config.dataset.label_divisor


INSTANCES_TITLE = "classes (instances shaded apart)"


def save_uint16(array: np.ndarray, path) -> None:
    """A 16-bit grey PNG; a one-line error when the values do not fit."""
    if array.size and (array.min() < 0 or array.max() > 65535):
        raise UserError(f"{path}: values {array.min()}..{array.max()} do not fit a 16-bit PNG")
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint16)).save(path)


def write_semantic(result: SegmentationResult, save: Saver) -> None:
    """NAME_semantic.png: 16-bit grey PNG, class index 0..C−1 per pixel, the ignore label = void."""
    if result.semantic is not None:
        save("semantic.png", lambda path: save_uint16(result.semantic, path))
