"""Where a PolyMaX ModelConfig meets the constructors of the PolyMaX task heads, the per-pixel baseline and the
PolyMaX criteria. ``polymax.build`` delegates here for ``task.kind`` in {semantic, depth, normals} and for
``architecture == 'deeplabv3plus'``.

* :func:`build_task_head` — the per-prediction task head on the kMaX trunk.
* :func:`build_baseline` — the DeepLabv3+ per-pixel model.
* :func:`build_polymax_criterion` — the training objective of a PolyMaX / baseline config.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from polymax.config.model import ModelConfig
from polymax.errors import UserError

POLYMAX_TASKS = ("semantic", "depth", "normals")


def build_task_head(config: ModelConfig, *, num_predictions: int | None = None) -> nn.Module:
    """The PolyMaX head for ``config.task.kind``; ``num_predictions`` defaults to the kMaX layers + 1 (final)."""
    kind = config.task.kind
    count = num_predictions if num_predictions is not None else sum(config.kmax_decoder.num_layers) + 1
    width = config.kmax_decoder.hidden
    if kind == "semantic":
        from polymax.model.heads.semantic import SemanticClusterHead
        if config.kmax_decoder.num_queries != config.dataset.num_classes:
            raise UserError(f"a PolyMaX semantic model needs one query per class: kmax_decoder.num_queries is "
                            f"{config.kmax_decoder.num_queries} but the data set has {config.dataset.num_classes} "
                            f"classes; pass kmax_decoder__num_queries={config.dataset.num_classes}")
        return SemanticClusterHead(num_classes=config.dataset.num_classes, in_channels=width, num_predictions=count)
    if kind == "depth":
        from polymax.model.heads.depth import DepthHead
        return DepthHead(in_channels=width, num_predictions=count, min_depth=config.task.min_depth,
                         max_depth=config.task.max_depth, mlp_layers=config.task.value_mlp_layers)
    if kind == "normals":
        from polymax.model.heads.normals import NormalsHead
        return NormalsHead(in_channels=width, num_predictions=count, mlp_layers=config.task.value_mlp_layers)
    raise UserError(f"task kind {kind!r} has no PolyMaX head; use one of {POLYMAX_TASKS}")


def build_baseline(config: ModelConfig) -> nn.Module:
    """The per-pixel DeepLabv3+ model for ``config`` (backbone, data set, task; decoder width
    ``head.pixel_head_channels``)."""
    from polymax.build import build_backbone, endpoint_activation
    from polymax.model.baseline import DeepLabV3Plus, DeepLabV3PlusDecoder
    from polymax.model.heads import per_pixel

    kind, width = config.task.kind, config.head.pixel_head_channels
    if kind == "semantic":
        if config.dataset.num_classes < 1:
            raise UserError(f"preset {config.preset!r} has a data set without classes; pass dataset=DatasetInfo(...)")
        head = per_pixel.PerPixelClassHead(in_channels=width, num_classes=config.dataset.num_classes)
    elif kind == "depth":
        head = per_pixel.PerPixelDepthHead(in_channels=width, min_depth=config.task.min_depth,
                                           max_depth=config.task.max_depth)
    elif kind == "normals":
        head = per_pixel.PerPixelNormalsHead(in_channels=width)
    else:
        raise UserError(f"the deeplabv3plus baseline supports tasks {POLYMAX_TASKS}, not {kind!r}")
    backbone = build_backbone(config.backbone)
    channels = tuple(backbone.channels)
    decoder = DeepLabV3PlusDecoder(stage2_channels=channels[1], stage5_channels=channels[4], channels=width,
                                   endpoint_activation=endpoint_activation(config.backbone.name))
    return DeepLabV3Plus(backbone=backbone, decoder=decoder, head=head, config=config)


def build_polymax_criterion(config: ModelConfig, **options: Any) -> nn.Module:
    """The objective of a PolyMaX or baseline ``config``: depth → NYU recipe (SILog + relative squared +
    gradient) on NYU-like data, Charbonnier on Taskonomy and for the baseline; normals → L2; semantic → the kMaX
    losses with fixed matching (kMaX) or per-pixel cross-entropy (baseline). ``options`` go to the criterion."""
    from polymax.losses import polymax_criterion as pc

    kind, info = config.task.kind, config.dataset
    baseline = config.architecture == "deeplabv3plus"
    if kind == "depth":
        robust = baseline or info.name == "taskonomy"
        weights = pc.CHARBONNIER_DEPTH_WEIGHTS if robust else pc.NYU_DEPTH_WEIGHTS
        return pc.DepthCriterion(min_depth=config.task.min_depth, max_depth=config.task.max_depth,
                                 **{"weights": weights, **options})
    if kind == "normals":
        return pc.NormalsCriterion(**options)
    if kind == "semantic":
        common = {"num_classes": info.num_classes, "ignore_label": info.ignore_label,
                  "label_divisor": info.label_divisor}
        if baseline:
            return pc.PerPixelSemanticCriterion(**common, **options)
        return pc.SemanticCriterion(**common, **options)
    raise UserError(f"task kind {kind!r} has no PolyMaX criterion; use one of {POLYMAX_TASKS}")
