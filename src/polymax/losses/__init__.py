"""Training objectives. Every criterion maps ``(Prediction, Targets)`` to :class:`LossTerms`."""

from polymax.losses.instance_discrimination import gumbel_top_k, instance_discrimination_loss
from polymax.losses.kmax_criterion import KMaXCriterion, KMaXLossWeights
from polymax.losses.mask_id import mask_id_cross_entropy
from polymax.losses.pq_style import pq_class_term, pq_dice_term
from polymax.losses.reduction import average_nonzero
from polymax.losses.semantic import semantic_loss
from polymax.losses.targets import MaskTargets, prepare_mask_targets, strided_downsample, thing_instance_ids
from polymax.losses.terms import LossTerms

__all__ = [
    "KMaXCriterion",
    "KMaXLossWeights",
    "LossTerms",
    "MaskTargets",
    "average_nonzero",
    "gumbel_top_k",
    "instance_discrimination_loss",
    "mask_id_cross_entropy",
    "pq_class_term",
    "pq_dice_term",
    "prepare_mask_targets",
    "semantic_loss",
    "strided_downsample",
    "thing_instance_ids",
]
