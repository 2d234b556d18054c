"""What the three segmentation tasks (panoptic, semantic, instance) share: the kMaX loss options, the class head,
the semantic picture and file, and the panoptic post-processor built from a config.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from polymax.config.model import ModelConfig, TaskConfig
from polymax.errors import UserError
from polymax.losses.kmax_criterion import KMaXLossWeights
from polymax.structures import SegmentationOutput, SegmentationResult, Targets
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


# -- OneFormer: one model, three segmentation tasks from one panoptic annotation ------------------------------------

def is_oneformer(config: ModelConfig, task: TaskConfig | None = None) -> bool:
    """True for a OneFormer model's task: task-guided centres, and the task reads the shared query group."""
    return config.kmax_decoder.task_queries == "oneformer" and (task is None or task.num_queries == 0)


def derived_targets(task: str, targets: Targets, *, thing_classes, ignore_label: int, label_divisor: int) -> Targets:
    """The targets of ``task`` derived from panoptic annotations (OneFormer's joint training).

    panoptic: every segment, unchanged. semantic: one mask per class — every instance of a class merged into
    segment class·label_divisor (crowd is no longer special: its pixels keep their class). instance: the thing
    segments only — stuff pixels become void (ignore label) in both maps, so the mask-ID / PQ-style losses and
    the auxiliary semantic loss ignore them and the clusters are free to leave them to no-object clusters.
    """
    semantic, panoptic = targets.semantic, targets.panoptic
    if task == "panoptic" or semantic is None:
        return targets
    void = semantic == ignore_label
    if task == "semantic":
        merged = torch.where(void, ignore_label * label_divisor, semantic.long() * label_divisor)
        return replace(targets, panoptic=merged.to(panoptic.dtype) if panoptic is not None else merged, crowd=None)
    if task == "instance":
        things = torch.as_tensor(list(thing_classes), dtype=semantic.dtype, device=semantic.device)
        stuff = ~void & ~torch.isin(semantic, things)
        new_semantic = torch.where(stuff, torch.full_like(semantic, ignore_label), semantic)
        new_panoptic = None if panoptic is None else torch.where(
            stuff, torch.full_like(panoptic, ignore_label * label_divisor), panoptic)
        return replace(targets, semantic=new_semantic, panoptic=new_panoptic)
    raise ValueError(f"no derived targets for task {task!r}")


class DerivedTargetsCriterion(torch.nn.Module):
    """``criterion(run, targets)`` on the task's :func:`derived_targets` (OneFormer's per-task losses)."""

    def __init__(self, criterion: torch.nn.Module, *, task: str, thing_classes, ignore_label: int,
                 label_divisor: int) -> None:
        super().__init__()
        self.criterion = criterion
        self.task = task
        self.options = dict(thing_classes=tuple(thing_classes), ignore_label=ignore_label, label_divisor=label_divisor)

    def forward(self, run, targets: Targets):
        return self.criterion(run, derived_targets(self.task, targets, **self.options))


def oneformer_criterion(config: ModelConfig, task: str, options) -> DerivedTargetsCriterion:
    """The kMaX losses of a OneFormer task on its derived targets; the semantic task's masks are one per class
    (no thing slots: every class is a 'stuff' mask), matched by Hungarian matching like the others."""
    from polymax.losses.kmax_criterion import KMaXCriterion

    info = config.dataset
    things = () if task == "semantic" else info.thing_classes
    criterion = KMaXCriterion(num_classes=info.num_classes, thing_classes=things, ignore_label=info.ignore_label,
                              label_divisor=info.label_divisor, max_thing_id=info.max_thing_id if things else 0,
                              matching="hungarian", **kmax_loss_options(options))
    return DerivedTargetsCriterion(criterion, task=task, thing_classes=info.thing_classes,
                                   ignore_label=info.ignore_label, label_divisor=info.label_divisor)


def class_weighted_probabilities(mask_logits: Tensor, class_logits: Tensor) -> Tensor:
    """OneFormer's semantic inference on K clusters: (B, K, h, w), (B, K, C + 1) → (B, C, h, w)
    Σ_k softmax_K(mask)_k · softmax(class)_k,c with the void column dropped."""
    masks = mask_logits.float().softmax(dim=1)
    classes = class_logits.float().softmax(dim=-1)[..., :-1]
    return torch.einsum("bkhw,bkc->bchw", masks, classes)
