"""Typed values passed between the stages of the model.

image → backbone → :class:`Features` → pixel decoder → :class:`PixelFeatures`
      → kMaX decoder → :class:`ClusterCentres` (+ one :class:`MaskPrediction` per kMaX layer)
      → mask head → :class:`MaskPrediction` → task heads → :class:`TaskOutput` per prediction
      → :class:`ModelOutput` (one :class:`TaskRun` per task run: final + auxiliary outputs)

Shapes use B = batch, K = clusters (queries), C = classes incl. the void channel,
h, w = the prediction's spatial size (stride 4, or 2 for the Cityscapes R50 / MaX-S models).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import Tensor


@dataclass
class Features:
    """Backbone endpoints, un-activated, as deeplab2's ``stage1`` .. ``stage5``.

    stage1: (B, C1, H/s1, W/s1) stem output; s1 = 2 for ResNet / MaX-S, 4 for ConvNeXt.
    stage2: (B, C2, H/4, W/4); stage3: (B, C3, H/8, W/8); stage4: (B, C4, H/16, W/16);
    stage5: (B, C5, H/32, W/32). Sizes follow the 32k+1 rule: (H - 1) / s + 1.
    """

    stage1: Tensor
    stage2: Tensor
    stage3: Tensor
    stage4: Tensor
    stage5: Tensor


@dataclass
class PixelFeatures:
    """Pixel-decoder outputs (deeplab2 ``decoder_stage1..3`` and ``decoder_output``).

    os32: (B, 2048, H/32, W/32), os16: (B, 1024, H/16, W/16), os8: (B, 512, H/8, W/8) — the
    memories the kMaX layers read; high_res: (B, D_hr, h, w) the final per-pixel embedding
    (D_hr = 256 at stride 4, 128 at stride 2).
    """

    os32: Tensor
    os16: Tensor
    os8: Tensor
    high_res: Tensor


@dataclass
class PixelRead:
    """What one kMaX layer reads from its pixel map; it depends on the pixels only, not on the cluster centres, so
    every query group's pass over the same PixelFeatures shares it (:meth:`KMaXDecoder.read_pixels`).

    projected: (B, E, h, w) the layer's pixel projection p; values: (B, E, h·w) the k-means values v;
    embeddings: (B, D, h, w) the L2-normalised pixel embeddings of the layer's auxiliary mask head.
    """

    projected: Tensor
    values: Tensor
    embeddings: Tensor


@dataclass
class MaskPrediction:
    """What a mask head (final or one kMaX layer's auxiliary head) predicts.

    mask_logits: (B, K, h, w) logits before the softmax over K.
    pixel_features: (B, D, h, w) L2-normalised pixel embeddings (D = 128 in kMaX).
    cluster_features: (B, K, E) the per-cluster features task heads turn into values
        (class logits, bin depths, normals); E = 256 in kMaX.
    """

    mask_logits: Tensor
    pixel_features: Tensor
    cluster_features: Tensor


@dataclass
class ClusterCentres:
    """kMaX decoder output.

    class_embeddings, mask_embeddings: (B, K, E) the projected final cluster centres.
    layers: one MaskPrediction per kMaX layer, computed on that layer's *input* centres at the
        layer's own stride (these drive the hard k-means assignment and deep supervision).
    task_queries: (B, N, E) the task-guided initial queries (OneFormer: N − 1 queries and the task token), which
        the query–text contrastive loss reads; None when the centres are learned.
    """

    class_embeddings: Tensor
    mask_embeddings: Tensor
    layers: list[MaskPrediction]
    task_queries: Tensor | None = None


@dataclass
class TaskOutput:
    """One prediction of one task head (the final one, or a kMaX layer's auxiliary one). Subclasses add the
    task's own fields; every task keeps the clusters it was computed from.

    mask_logits: (B, K, h, w) logits before the softmax over the K clusters of the task's query group (the
        per-pixel baseline: its raw per-pixel outputs, e.g. class logits (B, C, h, w)).
    pixel_features: (B, D, h, w) L2-normalised pixel embeddings.
    """

    mask_logits: Tensor
    pixel_features: Tensor

    @property
    def probabilities(self) -> Tensor:
        """P = softmax over the K clusters, (B, K, h, w)."""
        return torch.softmax(self.mask_logits, dim=1)

    def tensors(self) -> dict[str, Tensor]:
        """The non-empty tensor fields, by name (for export and inspection)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}


@dataclass
class SegmentationOutput(TaskOutput):
    """Panoptic, semantic and instance segmentation. class_logits: (B, K, C + 1) per-cluster class logits, void
    last (None for the per-pixel baseline, whose ``mask_logits`` are the class logits)."""

    class_logits: Tensor | None = None


@dataclass
class DepthOutput(TaskOutput):
    """depth: (B, 1, h, w) metres. cluster_depth: (B, K) per-cluster bin centres in metres (None: baseline)."""

    depth: Tensor | None = None
    cluster_depth: Tensor | None = None


@dataclass
class NormalsOutput(TaskOutput):
    """normals: (B, 3, h, w) unit vectors. cluster_normals: (B, K, 3) per-cluster unit vectors (None: baseline)."""

    normals: Tensor | None = None
    cluster_normals: Tensor | None = None


@dataclass
class TaskRun:
    """What one task head produced in one forward pass.

    final: the task's output from the final cluster centres, at the padded model resolution.
    aux: one output per kMaX layer (deep supervision), layer order, each at its layer's own stride.
    semantic_logits: (B, C + 1, h_s, w_s) the training-only auxiliary semantic branch (segmentation tasks that
        ask for it, in training mode).
    task_queries: (B, N, E) the task-guided initial queries of the run (``ClusterCentres.task_queries``), or None.
    samples: (B_t,) int64 the indices, in the model's input batch, of the images this run holds (a mixed-task
        batch of a OneFormer model: each task's run holds the images that drew it); None = the whole batch.
    """

    task: str
    final: TaskOutput
    aux: list[TaskOutput] = field(default_factory=list)
    semantic_logits: Tensor | None = None
    task_queries: Tensor | None = None
    samples: Tensor | None = None


@dataclass
class ModelOutput:
    """The model's answer for the task(s) it was asked to run: one :class:`TaskRun` per task, by task name."""

    runs: dict[str, TaskRun]

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.runs)

    def __getitem__(self, task: str) -> TaskRun:
        if task not in self.runs:
            raise KeyError(f"no output for task {task!r}; this output holds {list(self.runs)}")
        return self.runs[task]

    @property
    def run(self) -> TaskRun:
        """The only task's run (an error when several tasks ran)."""
        if len(self.runs) != 1:
            raise ValueError(f"this output holds {len(self.runs)} tasks {list(self.runs)}; pick one with output[task]")
        return next(iter(self.runs.values()))

    @property
    def final(self) -> TaskOutput:
        """The only task's final output."""
        return self.run.final


@dataclass
class Targets:
    """Ground truth for one batch, at input resolution (B, H, W) unless noted.

    semantic: int64 class ids 0..C-1, ``ignore_label`` for void.
    panoptic: int64 ids = class * label_divisor + instance (instance 0 for stuff, class = ignore for void).
    depth: float32 metres, 0 = invalid.  normals: (B, 3, H, W) float32, all-zero = invalid.
    thing_mask: bool, True where the class is a thing. crowd: bool, crowd regions (COCO iscrowd).
    semantic_weight: float32 per-pixel weights for the auxiliary semantic loss.
    Any field may be None when the data set has no such label.
    """

    semantic: Tensor | None = None
    panoptic: Tensor | None = None
    depth: Tensor | None = None
    normals: Tensor | None = None
    crowd: Tensor | None = None
    semantic_weight: Tensor | None = None


# --- What a task's decoding produces for one image, at the image's own size (numpy, for people and files) ---------

@dataclass
class SegmentInfo:
    """One panoptic segment (or instance), measured on the original-size map.

    id: 1-based index (the value in the 16-bit segment PNG); panoptic_id: class·label_divisor + instance;
    category: class index 0..C−1; bbox: (x, y, width, height) in pixels; score: class confidence.
    """

    id: int
    panoptic_id: int
    category: int
    category_name: str
    is_thing: bool
    area: int
    bbox: tuple[int, int, int, int]
    score: float


@dataclass
class Result:
    """The answer of one task for one image at its original size (H, W).

    probabilities: (K, H, W) float32 per-cluster probability maps, only when asked for; clusters: then what each
    cluster stands for, (sort key, caption) per cluster (the task's ``cluster_captions``, e.g. its bin depth).
    """

    task: str
    size: tuple[int, int]
    probabilities: np.ndarray | None = None
    clusters: list[tuple[float, str]] | None = None


@dataclass
class SegmentationResult(Result):
    """semantic: (H, W) int32 class ids (``ignore_label`` = void). Panoptic models also give panoptic: (H, W)
    int64 class·label_divisor + instance (void = ignore_label·label_divisor) and its ``segments``; instance
    models give the thing segments only (``panoptic`` then holds just those instances, the rest void)."""

    semantic: np.ndarray | None = None
    panoptic: np.ndarray | None = None
    segments: list[SegmentInfo] | None = None


@dataclass
class DepthResult(Result):
    """depth: (H, W) float32 metres."""

    depth: np.ndarray | None = None


@dataclass
class NormalsResult(Result):
    """normals: (H, W, 3) float32 unit vectors (x, y, z)."""

    normals: np.ndarray | None = None


@dataclass
class MultiTaskResult:
    """The answers of several tasks of one model for one image, from one forward pass (``task="all"`` or a tuple
    of task names; the trunk ran once for all of them).

    results: task name → that task's :class:`Result` (each at the image's original size), in the model's task
        order. ``result["depth"]`` reads one; iterating yields the task names, as a mapping does.
    """

    results: dict[str, Result]

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.results)

    @property
    def size(self) -> tuple[int, int]:
        """The image's original size (H, W), which every task's result shares."""
        return next(iter(self.results.values())).size

    def __getitem__(self, task: str) -> Result:
        if task not in self.results:
            raise KeyError(f"no result for task {task!r}; this result holds {list(self.results)}")
        return self.results[task]

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)
