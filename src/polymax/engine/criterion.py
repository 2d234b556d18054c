"""The one place where a training objective is chosen: model config (task, label space) + loss options →
``criterion(prediction, targets) -> LossTerms``. A new task adds one branch here.
"""

from __future__ import annotations

from torch import nn

from polymax.config import ModelConfig
from polymax.engine.train_config import LossOptions
from polymax.errors import UserError


def build_criterion(model_config: ModelConfig, loss: LossOptions) -> nn.Module:
    """The criterion for ``model_config.task.kind``. Random pixel sampling (instance discrimination) draws
    from torch's global generator, whose state the checkpoints save."""
    kind, info = model_config.task.kind, model_config.dataset
    if kind in ("panoptic", "semantic"):
        from polymax.losses.kmax_criterion import KMaXCriterion, KMaXLossWeights

        weights = KMaXLossWeights(pq_class=loss.class_weight, pq_dice=loss.dice_weight, mask_id=loss.mask_id_weight,
                                  instance_discrimination=loss.inst_disc_weight, semantic=loss.semantic_weight)
        # PolyMaX semantic: K = C queries, query i is class i (fixed matching instead of Hungarian).
        return KMaXCriterion(
            num_classes=info.num_classes, thing_classes=info.thing_classes, ignore_label=info.ignore_label,
            label_divisor=info.label_divisor, max_thing_id=info.max_thing_id, weights=weights,
            inst_disc_k=loss.inst_disc_samples, inst_disc_sample_temperature=loss.inst_disc_temperature,
            semantic_top_k=loss.semantic_top_k, semantic_sample_k=loss.semantic_samples,
            matching="fixed" if kind == "semantic" else "hungarian")
    if kind in ("depth", "normals"):
        try:
            from polymax.losses import polymax_criterion
        except ImportError as error:
            raise UserError(f"task {kind!r} has no training objective in this version of polymax") from error
        if kind == "depth":
            return polymax_criterion.DepthCriterion(min_depth=model_config.task.min_depth,
                                                    max_depth=model_config.task.max_depth)
        return polymax_criterion.NormalsCriterion()
    raise UserError(f"no training objective for task kind {kind!r}; use panoptic, semantic, depth or normals")
