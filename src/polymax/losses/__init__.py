"""Training objectives. Every criterion maps ``(TaskRun, Targets)`` to :class:`LossTerms`."""

from polymax.losses.depth import (
    charbonnier_loss,
    multiscale_gradient_loss,
    relative_squared_error,
    scale_invariant_log_error,
)
from polymax.losses.instance_discrimination import gumbel_top_k, instance_discrimination_loss
from polymax.losses.kmax_criterion import KMaXCriterion, KMaXLossWeights
from polymax.losses.mask_id import mask_id_cross_entropy
from polymax.losses.normals import angular_loss, normal_l2_loss, valid_normals
from polymax.losses.polymax_criterion import (
    CHARBONNIER_DEPTH_WEIGHTS,
    NYU_DEPTH_WEIGHTS,
    DepthCriterion,
    DepthLossWeights,
    NormalsCriterion,
    PerPixelSemanticCriterion,
    SemanticCriterion,
)
from polymax.losses.pq_style import pq_class_term, pq_dice_term
from polymax.losses.reduction import average_nonzero
from polymax.losses.semantic import semantic_loss
from polymax.losses.targets import MaskTargets, prepare_mask_targets, strided_downsample, thing_instance_ids
from polymax.losses.terms import LossTerms

__all__ = [
    "CHARBONNIER_DEPTH_WEIGHTS",
    "NYU_DEPTH_WEIGHTS",
    "DepthCriterion",
    "DepthLossWeights",
    "KMaXCriterion",
    "KMaXLossWeights",
    "LossTerms",
    "MaskTargets",
    "NormalsCriterion",
    "PerPixelSemanticCriterion",
    "SemanticCriterion",
    "angular_loss",
    "average_nonzero",
    "charbonnier_loss",
    "gumbel_top_k",
    "instance_discrimination_loss",
    "mask_id_cross_entropy",
    "multiscale_gradient_loss",
    "normal_l2_loss",
    "pq_class_term",
    "pq_dice_term",
    "prepare_mask_targets",
    "relative_squared_error",
    "scale_invariant_log_error",
    "semantic_loss",
    "strided_downsample",
    "thing_instance_ids",
    "valid_normals",
]
