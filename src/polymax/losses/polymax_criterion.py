"""PolyMaX training objectives: ``criterion(prediction, targets) -> LossTerms``, like ``KMaXCriterion``.

* :class:`DepthCriterion` — NYUD-v2 recipe (paper §4.1): SILog + relative squared error (ViP-DeepLab /
  deeplab2's depth loss) + MegaDepth's multi-scale gradient loss; Taskonomy recipe: Charbonnier. The per-pixel
  DeepLabv3+ baseline uses Charbonnier on every data set (paper §4.3, scalability study: per-pixel depth
  regression needs the robust loss to train stably).
* :class:`NormalsCriterion` — L2 (the paper's choice) or the truncated angular loss.
* :class:`SemanticCriterion` — the kMaX losses with the fixed assignment query i ↔ class i (K = C).
* :class:`PerPixelSemanticCriterion` — cross-entropy for the per-pixel baseline's class logits.

Deep supervision: the depth / normal terms are computed on the final prediction and on every auxiliary one
(``run.aux``), all with the same weights, as kMaX does for its mask losses; auxiliary terms are named
``aux_<i>`` + the term name (deeplab2's naming, as in ``KMaXCriterion``).

Geometry. Targets come at the input resolution (H, W); the model predicts on the bottom/right-padded
32k+1 input at stride 4 (auxiliary predictions at 32, 16, 8). Depth and normal predictions are **upsampled to the
targets** — bilinear with align_corners to the padded size, then the padding is cropped away
(:func:`polymax.model.meta_arch.resize_to_input`; normals are then renormalised) — the convention of AdaBins /
BinsFormer, which uses every GT pixel and keeps thin structures and the gradient loss at full resolution.
The padded area never meets a target, so it is excluded by construction. Depth is valid where
min_depth < g ≤ max_depth (0 = missing is therefore invalid); normals where the GT vector is not all-zero.
The segmentation criteria follow kMaX instead (labels strided-downsampled to the prediction): the labels are
first padded to the model's 32k+1 size with the ignore label, so any input size works and padding is void.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.geometry import padded_size, resize_to_input
from polymax.losses.depth import (
    charbonnier_loss,
    multiscale_gradient_loss,
    relative_squared_error,
    scale_invariant_log_error,
)
from polymax.losses.kmax_criterion import KMaXCriterion
from polymax.losses.normals import angular_loss, normal_l2_loss, valid_normals
from polymax.losses.semantic import semantic_loss
from polymax.losses.terms import LossTerms
from polymax.model.cluster_decoder.mask_head import l2_normalise
from polymax.structures import Targets, TaskOutput, TaskRun


@dataclass(frozen=True)
class DepthLossWeights:
    """Weights of the depth terms; 0 skips a term. The default is the NYUD-v2 recipe.

    The paper gives the terms but not their weights: SILog and relative squared error are summed with weight 1
    as in deeplab2's ``SILogPlusRelativeSquaredLoss``; the gradient term uses MegaDepth's α = 0.5.
    """

    silog: float = 1.0
    relative_squared: float = 1.0
    gradient: float = 0.5
    charbonnier: float = 0.0


NYU_DEPTH_WEIGHTS = DepthLossWeights()
CHARBONNIER_DEPTH_WEIGHTS = DepthLossWeights(silog=0.0, relative_squared=0.0, gradient=0.0, charbonnier=1.0)


def _outputs(run: TaskRun) -> list[tuple[str, TaskOutput]]:
    return [("", run.final)] + [(f"aux_{i}", aux) for i, aux in enumerate(run.aux)]


def _onto_targets(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, h, w) model-resolution maps → (B, C, H, W) on the targets' pixels (maps already at H × W pass)."""
    return maps if tuple(maps.shape[-2:]) == tuple(size) else resize_to_input(maps, size)


class DepthCriterion(nn.Module):
    """Depth losses on the final and every auxiliary ``prediction.depth`` (B, 1, h, w).

    Args:
        min_depth, max_depth: GT depth g counts where min_depth < g ≤ max_depth (metres).
        weights: the term weights (default :data:`NYU_DEPTH_WEIGHTS`; :data:`CHARBONNIER_DEPTH_WEIGHTS` for
            Taskonomy and the per-pixel baseline).
        gradient_scales: scales of the multi-scale gradient loss (4, MegaDepth).
        charbonnier_epsilon: ε of the Charbonnier penalty, metres.
    """

    def __init__(self, *, min_depth: float, max_depth: float, weights: DepthLossWeights | None = None,
                 gradient_scales: int = 4, charbonnier_epsilon: float = 1e-3) -> None:
        super().__init__()
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"need 0 ≤ min_depth < max_depth, got {min_depth}, {max_depth}")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.weights = weights or NYU_DEPTH_WEIGHTS
        self.gradient_scales = gradient_scales
        self.charbonnier_epsilon = charbonnier_epsilon

    def valid(self, depth: Tensor) -> Tensor:
        """(B, H, W) GT depth → bool mask of the pixels that count."""
        return torch.isfinite(depth) & (depth > self.min_depth) & (depth <= self.max_depth)

    def _terms(self) -> list[tuple[str, float, Callable[..., Tensor]]]:
        w = self.weights
        return [(name, weight, fn) for name, weight, fn in (
            ("depth_silog_loss", w.silog, scale_invariant_log_error),
            ("depth_relative_squared_loss", w.relative_squared, relative_squared_error),
            ("depth_gradient_loss", w.gradient,
             lambda p, g, v: multiscale_gradient_loss(p, g, v, num_scales=self.gradient_scales)),
            ("depth_charbonnier_loss", w.charbonnier,
             lambda p, g, v: charbonnier_loss(p, g, v, epsilon=self.charbonnier_epsilon)),
        ) if weight > 0]

    def forward(self, run: TaskRun, targets: Targets) -> LossTerms:
        if targets.depth is None:
            raise ValueError("DepthCriterion needs depth labels (Targets.depth)")
        target = targets.depth.float()
        target = target[:, 0] if target.dim() == 4 else target                 # (B, H, W)
        valid = self.valid(target)
        size = tuple(target.shape[-2:])
        values: dict[str, Tensor] = {}
        for prefix, output in _outputs(run):
            if output.depth is None:
                raise ValueError(f"prediction {prefix or 'final'} has no depth; is this a depth model?")
            depth = _onto_targets(output.depth.float(), size)[:, 0]         # (B, H, W)
            for name, weight, loss in self._terms():
                values[prefix + name] = weight * loss(depth, target, valid).mean()
        return LossTerms(values)


class NormalsCriterion(nn.Module):
    """Normal losses on the final and every auxiliary ``prediction.normals`` (B, 3, h, w).

    Args:
        loss: 'l2' (the paper's) or 'angular' (truncated angular loss, radians).
        weight: the weight of the term (each prediction).
    """

    def __init__(self, *, loss: str = "l2", weight: float = 1.0) -> None:
        super().__init__()
        losses = {"l2": normal_l2_loss, "angular": angular_loss}
        if loss not in losses:
            raise ValueError(f"loss must be 'l2' or 'angular', got {loss!r}")
        self.loss_name = f"normal_{loss}_loss"
        self.loss = losses[loss]
        self.weight = weight

    def forward(self, run: TaskRun, targets: Targets) -> LossTerms:
        if targets.normals is None:
            raise ValueError("NormalsCriterion needs normal labels (Targets.normals)")
        target = targets.normals.float()
        valid = valid_normals(target)
        size = tuple(target.shape[-2:])
        values: dict[str, Tensor] = {}
        for prefix, output in _outputs(run):
            if output.normals is None:
                raise ValueError(f"prediction {prefix or 'final'} has no normals; is this a normals model?")
            # Bilinear interpolation shortens unit vectors between differing neighbours: renormalise.
            normals = l2_normalise(_onto_targets(output.normals.float(), size), dim=1)
            values[prefix + self.loss_name] = self.weight * self.loss(normals, target, valid).mean()
        return LossTerms(values)


def pad_targets_to_model_size(targets: Targets, *, ignore_label: int, label_divisor: int) -> Targets:
    """Pad the segmentation labels bottom / right to the model's 32k+1 size, as void (semantic ignore, panoptic
    ignore · divisor, crowd False, weight 0), so they line up with the padded input. Depth / normals untouched."""
    reference = targets.semantic if targets.semantic is not None else targets.panoptic
    if reference is None:
        return targets
    height, width = reference.shape[-2:]
    pad_h, pad_w = padded_size((height, width))
    if (pad_h, pad_w) == (height, width):
        return targets

    def pad(x: Tensor | None, value: float | int | bool) -> Tensor | None:
        return None if x is None else F.pad(x, (0, pad_w - width, 0, pad_h - height), value=value)

    return Targets(semantic=pad(targets.semantic, ignore_label),
                   panoptic=pad(targets.panoptic, ignore_label * label_divisor),
                   depth=targets.depth, normals=targets.normals, crowd=pad(targets.crowd, False),
                   semantic_weight=pad(targets.semantic_weight, 0.0))


class SemanticCriterion(KMaXCriterion):
    """The kMaX losses (PQ-style class + dice, mask-ID cross-entropy, instance discrimination, auxiliary semantic)
    with the fixed assignment query i ↔ class i: ``KMaXCriterion(matching="fixed")`` with every class a stuff slot.

    Keyword options other than ``num_classes`` / ``ignore_label`` / ``label_divisor`` go to
    :class:`~polymax.losses.kmax_criterion.KMaXCriterion` (weights, focal α, sampling, …).
    """

    def __init__(self, *, num_classes: int, ignore_label: int = 255, label_divisor: int = 1000, **options) -> None:
        super().__init__(num_classes=num_classes, thing_classes=(), ignore_label=ignore_label,
                         label_divisor=label_divisor, max_thing_id=0, matching="fixed", **options)

    def forward(self, run: TaskRun, targets: Targets, *, generator: torch.Generator | None = None) -> LossTerms:
        clusters = run.final.mask_logits.shape[1]
        if clusters != self.num_classes:
            raise ValueError(f"SemanticCriterion needs K = C: the prediction has {clusters} clusters for "
                             f"{self.num_classes} classes")
        targets = pad_targets_to_model_size(targets, ignore_label=self.ignore_label, label_divisor=self.label_divisor)
        return super().forward(run, targets, generator=generator)


class PerPixelSemanticCriterion(nn.Module):
    """Per-pixel cross-entropy of the baseline's class logits (``prediction.mask_logits``, (B, C, h, w)).

    Labels are padded with the ignore label to the model size and strided-downsampled to (h, w); ignore pixels
    weigh 0; ``top_k_percent`` < 1 keeps only the hardest pixels (deeplab2's bootstrapped CE).
    """

    def __init__(self, *, num_classes: int, ignore_label: int = 255, label_divisor: int = 1000,
                 top_k_percent: float = 1.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.label_divisor = label_divisor
        self.top_k_percent = top_k_percent

    def forward(self, run: TaskRun, targets: Targets) -> LossTerms:
        logits = run.final.mask_logits.float()
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"per-pixel class logits have {logits.shape[1]} channels, expected {self.num_classes}")
        targets = pad_targets_to_model_size(targets, ignore_label=self.ignore_label, label_divisor=self.label_divisor)
        if targets.semantic is None:
            raise ValueError("PerPixelSemanticCriterion needs semantic labels (Targets.semantic)")
        loss = semantic_loss(logits, targets.semantic, targets.semantic_weight, ignore_label=self.ignore_label,
                             top_k_percent=self.top_k_percent)
        return LossTerms({"per_pixel_cross_entropy_loss": loss.mean()})
