"""The one place where a training objective is chosen: model config (task, label space) + loss options →
``criterion(prediction, targets) -> LossTerms``. A new task adds one branch here.
"""

from __future__ import annotations

from torch import nn

from polymax.config.model import ModelConfig
from polymax.config.train import LossOptions
from polymax.errors import UserError


def build_criterion(model_config: ModelConfig, loss: LossOptions) -> nn.Module:
    """The criterion for ``model_config.task.kind``. Random pixel sampling (instance discrimination) draws
    from torch's global generator, whose state the checkpoints save."""
    kind, info = model_config.task.kind, model_config.dataset
    if kind in ("depth", "normals") or model_config.architecture == "deeplabv3plus":
        # PolyMaX depth / normals recipes and every per-pixel baseline objective live with their heads.
        from polymax.polymax_build import build_polymax_criterion

        return build_polymax_criterion(model_config)
    if kind not in ("panoptic", "semantic"):
        raise UserError(f"no training objective for task kind {kind!r}; use panoptic, semantic, depth or normals")
    from polymax.losses.kmax_criterion import KMaXLossWeights

    weights = KMaXLossWeights(pq_class=loss.class_weight, pq_dice=loss.dice_weight, mask_id=loss.mask_id_weight,
                              instance_discrimination=loss.inst_disc_weight, semantic=loss.semantic_weight)
    options = dict(weights=weights, inst_disc_k=loss.inst_disc_samples,
                   inst_disc_sample_temperature=loss.inst_disc_temperature, semantic_top_k=loss.semantic_top_k,
                   semantic_sample_k=loss.semantic_samples,
                   semantic_small_instance_area=loss.semantic_small_instance_area,
                   semantic_small_instance_weight=loss.semantic_small_instance_weight)
    if kind == "semantic":
        # PolyMaX semantic: K = C queries, query i is class i (fixed matching instead of Hungarian).
        from polymax.losses.polymax_criterion import SemanticCriterion

        return SemanticCriterion(num_classes=info.num_classes, ignore_label=info.ignore_label,
                                 label_divisor=info.label_divisor, **options)
    from polymax.losses.kmax_criterion import KMaXCriterion

    return KMaXCriterion(num_classes=info.num_classes, thing_classes=info.thing_classes,
                         ignore_label=info.ignore_label, label_divisor=info.label_divisor,
                         max_thing_id=info.max_thing_id, matching="hungarian", **options)
