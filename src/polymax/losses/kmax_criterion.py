"""The kMaX-DeepLab training objective (deeplab2 ``MaXDeepLabLoss`` as built by ``DeepLabFamilyLoss``).

For the final output and each kMaX layer's auxiliary output (deep supervision, same weights, no decay):
PQ-style class term (3.0), PQ-style dice term (3.0 · α/K), mask-ID cross-entropy (0.3), pixel-contrastive
instance discrimination (1.0); plus the auxiliary semantic loss (1.0) on the final output's semantic head.
The Hungarian matching is computed once on the final output and reused by every auxiliary output; each output
draws its own instance-discrimination sample. Auxiliary mask logits and pixel features arrive at their layer's
native stride and are resized bilinearly with ``align_corners=True`` to the final size (not re-normalised).

Per-sample losses are averaged over the batch; a NaN term becomes 0, as deeplab2's trainer does (the step then
learns nothing from that term instead of corrupting the weights).

``matching="fixed"`` is PolyMaX's semantic head: K = C queries, query i is class i, every class is one GT mask
(no thing instances), and no Hungarian matching is run. A model without a class head may then leave
``class_logits`` None: the class term is skipped and the dice term's class-probability weights are 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from polymax.geometry import resize_bilinear
from polymax.losses.instance_discrimination import instance_discrimination_loss
from polymax.losses.mask_id import mask_id_cross_entropy
from polymax.losses.matching import MatchResult, fixed_match, hungarian_match
from polymax.losses.pq_style import pq_class_term, pq_dice_term
from polymax.losses.semantic import semantic_loss, small_instance_weights
from polymax.losses.targets import MaskTargets, prepare_mask_targets
from polymax.losses.terms import LossTerms
from polymax.structures import SegmentationOutput, Targets, TaskRun

PQ_CLASS = "pq_style_loss_class_term"
PQ_DICE = "pq_style_loss_mask_dice_term"
MASK_ID = "mask_id_cross_entropy_loss"
INSTANCE_DISCRIMINATION = "instance_discrimination_loss"
SEMANTIC = "semantic_loss"


@dataclass(frozen=True)
class KMaXLossWeights:
    """Weights of the kMaX terms (the official configs' values). A weight of 0 skips the term."""

    pq_class: float = 3.0
    pq_dice: float = 3.0
    mask_id: float = 0.3
    instance_discrimination: float = 1.0
    semantic: float = 1.0


def _nan_to_zero(value: Tensor) -> Tensor:
    return torch.where(torch.isnan(value), torch.zeros_like(value), value)


class KMaXCriterion(nn.Module):
    """``criterion(prediction, targets) -> LossTerms`` for kMaX-DeepLab panoptic (or PolyMaX semantic) training.

    Args:
        num_classes: C, the classes without void; ``class_logits`` has C + 1 channels, void last.
        thing_classes: class ids that have instances (ignored with ``matching="fixed"``).
        ignore_label, label_divisor: the label encoding of :class:`~polymax.structures.Targets`.
        max_thing_id: thing slots among the GT masks (128 on COCO, 256 on Cityscapes / ADE20K).
        weights: the term weights.
        focal_alpha: α of the class term (0.75); the dice term is scaled by α / K to match it.
        inst_disc_k: pixels sampled per image for instance discrimination (4096; 1024 for ADE20K at 641).
        inst_disc_sample_temperature: τ_s of the sampling logits τ_s · log(inverse mask area) (1.5 on COCO and
            ADE20K, 0.6 on Cityscapes); > 1 favours small masks.
        inst_disc_logit_temperature: τ of the similarity logits F·Fᵀ / τ (0.3, fixed in deeplab2).
        mask_id_top_k, semantic_top_k: fraction of the hardest pixels kept (1.0; Cityscapes semantic 0.2).
        semantic_sample_k, semantic_sample_temperature: Gumbel-top-k sub-sampling of the semantic loss; 0 (off)
            is deeplab2's released behaviour, 4096 / 2.0 the paper's.
        semantic_small_instance_area, semantic_small_instance_weight: thing instances under this many pixels
            weigh ``weight`` in the semantic loss when the targets carry no weights of their own (Cityscapes:
            4096 px, ×3; 0 = off).
        matching: "hungarian" (kMaX) or "fixed" (query i ↔ class i, K = C).
        generator: source of the sampling noise; the engine may set ``criterion.generator`` and checkpoint its
            state. None uses torch's global generator.
    """

    def __init__(self, *, num_classes: int, thing_classes: Sequence[int], ignore_label: int = 255,
                 label_divisor: int = 1000, max_thing_id: int = 128, weights: KMaXLossWeights | None = None,
                 focal_alpha: float = 0.75, inst_disc_k: int = 4096, inst_disc_sample_temperature: float = 1.5,
                 inst_disc_logit_temperature: float = 0.3, mask_id_top_k: float = 1.0, semantic_top_k: float = 1.0,
                 semantic_sample_k: int = 0, semantic_sample_temperature: float = 2.0,
                 semantic_small_instance_area: int = 0, semantic_small_instance_weight: float = 1.0,
                 matching: Literal["hungarian", "fixed"] = "hungarian",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if matching not in ("hungarian", "fixed"):
            raise ValueError(f"matching must be 'hungarian' or 'fixed', got {matching!r}")
        self.num_classes = num_classes
        self.thing_classes = tuple(thing_classes) if matching == "hungarian" else ()
        self.ignore_label = ignore_label
        self.label_divisor = label_divisor
        self.max_thing_id = max_thing_id if matching == "hungarian" else 0
        self.weights = weights or KMaXLossWeights()
        self.focal_alpha = focal_alpha
        self.inst_disc_k = inst_disc_k
        self.inst_disc_sample_temperature = inst_disc_sample_temperature
        self.inst_disc_logit_temperature = inst_disc_logit_temperature
        self.mask_id_top_k = mask_id_top_k
        self.semantic_top_k = semantic_top_k
        self.semantic_sample_k = semantic_sample_k
        self.semantic_sample_temperature = semantic_sample_temperature
        self.small_instance_area = semantic_small_instance_area
        self.small_instance_weight = semantic_small_instance_weight
        self.matching = matching
        self.generator = generator

    def prepare_targets(self, targets: Targets, size: tuple[int, int]) -> MaskTargets:
        """The GT masks at the prediction size (h, w)."""
        return prepare_mask_targets(targets, output_size=size, num_classes=self.num_classes,
                                    thing_classes=self.thing_classes, ignore_label=self.ignore_label,
                                    label_divisor=self.label_divisor, max_thing_id=self.max_thing_id)

    def match(self, prediction: SegmentationOutput, mask_targets: MaskTargets) -> MatchResult:
        """The slot ↔ GT-mask assignment of the final output (Hungarian or fixed)."""
        solver = hungarian_match if self.matching == "hungarian" else fixed_match
        return solver(prediction.mask_logits, prediction.class_logits, mask_targets)

    def forward(self, run: TaskRun, targets: Targets, *, generator: torch.Generator | None = None) -> LossTerms:
        # The losses run in float32 even inside a bf16 / fp16 autocast region (softmaxes over many slots).
        with torch.autocast(device_type=run.final.mask_logits.device.type, enabled=False):
            return self._forward(run, targets, generator)

    def _forward(self, run: TaskRun, targets: Targets, generator: torch.Generator | None) -> LossTerms:
        prediction = run.final
        if prediction.class_logits is None and self.matching == "hungarian":
            raise ValueError("Hungarian matching needs class_logits (B, K, C + 1)")
        if prediction.class_logits is not None and prediction.class_logits.shape[-1] != self.num_classes + 1:
            raise ValueError(f"class_logits has {prediction.class_logits.shape[-1]} channels, expected "
                             f"{self.num_classes + 1} (classes + void)")
        generator = generator if generator is not None else self.generator
        size = tuple(prediction.mask_logits.shape[-2:])
        mask_targets = self.prepare_targets(targets, size)
        match = self.match(prediction, mask_targets)

        per_sample: dict[str, Tensor] = {}
        outputs = [("", prediction)] + [(f"aux_{i}", aux) for i, aux in enumerate(run.aux)]
        for prefix, output in outputs:
            if (output.class_logits is None) != (prediction.class_logits is None):
                raise ValueError(f"auxiliary output {prefix} and the final output disagree on class_logits")
            terms = self._output_terms(
                mask_logits=resize_bilinear(output.mask_logits.float(), size),
                pixel_features=resize_bilinear(output.pixel_features.float(), size),
                class_logits=None if output.class_logits is None else output.class_logits.float(),
                match=match, mask_targets=mask_targets,
                generator=generator)
            per_sample.update({prefix + name: value for name, value in terms.items()})

        if run.semantic_logits is not None and self.weights.semantic > 0:
            per_sample[SEMANTIC] = self.weights.semantic * self._semantic_term(
                run.semantic_logits.float(), targets, mask_targets, generator)

        # Batch mean, then NaN → 0 (deeplab2's trainer).
        values = {name: _nan_to_zero(value.mean()) for name, value in per_sample.items()}
        return LossTerms(values)

    def _output_terms(self, *, mask_logits: Tensor, pixel_features: Tensor, class_logits: Tensor | None,
                      match: MatchResult, mask_targets: MaskTargets,
                      generator: torch.Generator | None) -> dict[str, Tensor]:
        """The four weighted per-sample (B,) terms of one output, in deeplab2's order (no class term without
        class logits, which only the fixed assignment allows)."""
        weights = self.weights
        terms: dict[str, Tensor] = {}
        if weights.pq_class > 0 and class_logits is not None:
            terms[PQ_CLASS] = weights.pq_class * pq_class_term(
                class_logits, match, mask_targets.mask_class, focal_alpha=self.focal_alpha)
        if weights.pq_dice > 0:
            terms[PQ_DICE] = weights.pq_dice * pq_dice_term(
                mask_logits, match, mask_targets, focal_alpha=self.focal_alpha)
        if weights.mask_id > 0:
            terms[MASK_ID] = weights.mask_id * mask_id_cross_entropy(
                mask_logits, match, mask_targets, top_k_percent=self.mask_id_top_k)
        if weights.instance_discrimination > 0:
            terms[INSTANCE_DISCRIMINATION] = weights.instance_discrimination * instance_discrimination_loss(
                pixel_features, mask_targets, sample_k=self.inst_disc_k,
                sample_temperature=self.inst_disc_sample_temperature,
                temperature=self.inst_disc_logit_temperature, generator=generator)
        return terms

    def _semantic_term(self, semantic_logits: Tensor, targets: Targets, mask_targets: MaskTargets,
                       generator: torch.Generator | None) -> Tensor:
        sampling_targets = None
        if self.semantic_sample_k > 0:
            size = tuple(semantic_logits.shape[-2:])
            sampling_targets = mask_targets if size == mask_targets.size else self.prepare_targets(targets, size)
        weight = targets.semantic_weight
        if weight is None and self.small_instance_area > 0 and targets.panoptic is not None:
            weight = small_instance_weights(targets.panoptic, thing_classes=self.thing_classes,
                                            label_divisor=self.label_divisor, max_area=self.small_instance_area,
                                            weight=self.small_instance_weight)
        return semantic_loss(semantic_logits, targets.semantic, weight,
                             ignore_label=self.ignore_label, top_k_percent=self.semantic_top_k,
                             sample_k=self.semantic_sample_k, sampling_targets=sampling_targets,
                             sample_temperature=self.semantic_sample_temperature, generator=generator)
