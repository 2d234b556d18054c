"""The one place where a ModelConfig meets the constructors.

``build_model("kmax_r50_coco")`` or ``build_model(config)`` → :class:`polymax.model.meta_arch.KMaX`.
Overrides, kept simple:

* a top-level field of ModelConfig: ``build_model("kmax_r50_coco", crop_size=(641, 641))``, or a whole
  section: ``dataset=my_dataset_info``;
* a field of a section, written ``section__field``: ``kmax_decoder__num_queries=256``,
  ``backbone__drop_path_keep=1.0``, ``task__aux_semantic="none"``.

To add a task head, add its branch in :func:`build_task_head` (one ``if`` per ``task.kind``); the PolyMaX
heads and the DeepLabv3+ baseline are built by :mod:`polymax.polymax_build`.
"""

from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass, replace
from typing import Any

from torch import nn

from polymax.config.model import BackboneConfig, ModelConfig
from polymax.errors import UserError


def resolve_config(preset: str | ModelConfig, **overrides: Any) -> ModelConfig:
    """The preset's ModelConfig (or the given one) with ``overrides`` applied."""
    if isinstance(preset, ModelConfig):
        config = preset
    else:
        from polymax.presets import PRESETS
        if preset not in PRESETS:
            close = difflib.get_close_matches(str(preset), PRESETS, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else "run `polymax presets` to list them"
            raise UserError(f"unknown preset {preset!r}; {hint}")
        config = PRESETS[preset]()
    return _apply_overrides(config, overrides)


def _apply_overrides(config: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    top = {f.name for f in fields(ModelConfig)}
    direct, nested = {}, {}
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if section not in top:
            raise UserError(f"unknown override {key!r}; use one of {sorted(top)} or section__field")
        if name:
            nested.setdefault(section, {})[name] = value
        else:
            direct[key] = value
    config = replace(config, **direct)
    for section, values in nested.items():
        current = getattr(config, section)
        if not is_dataclass(current):
            raise UserError(f"override {section}__…: {section!r} is not a section with fields")
        known = {f.name for f in fields(current)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown override {section}__{unknown[0]}; {section} has {sorted(known)}")
        config = replace(config, **{section: replace(current, **values)})
    return config


def build_backbone(config: BackboneConfig) -> nn.Module:
    keep = config.drop_path_keep
    if config.name == "resnet50":
        from polymax.model.backbones.resnet import resnet50
        return resnet50(drop_path_keep=keep)
    if config.name == "resnet_tiny":
        from polymax.model.backbones.resnet import resnet_tiny
        return resnet_tiny(width=config.width, drop_path_keep=keep)
    if config.name == "axial_resnet50":
        from polymax.model.backbones.axial_resnet import axial_resnet50
        return axial_resnet50(drop_path_keep=keep)
    if config.name in ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"):
        from polymax.model.backbones import convnext
        return getattr(convnext, config.name)(drop_path_keep=keep)
    raise UserError(f"unknown backbone {config.name!r}; use resnet50, axial_resnet50, "
                    "convnext_{tiny,small,base,large} or resnet_tiny")


def endpoint_activation(backbone_name: str) -> str:
    """The activation that turns a backbone's un-activated endpoints into deeplab2's resN maps."""
    return "relu" if backbone_name in ("resnet50", "resnet_tiny") else "gelu"


def build_task_head(config: ModelConfig, *, num_predictions: int) -> nn.Module:
    """The task head for ``config.task.kind`` (see polymax.model.heads.classification for the interface)."""
    kind = config.task.kind
    if kind == "panoptic":
        from polymax.model.heads.classification import ClassHead
        if config.dataset.num_classes < 1:
            raise UserError(f"preset {config.preset!r} has a data set without classes; pass dataset=DatasetInfo(...)")
        return ClassHead(num_classes=config.dataset.num_classes, in_channels=config.kmax_decoder.hidden,
                         num_predictions=num_predictions)
    if kind in ("semantic", "depth", "normals"):
        from polymax.polymax_build import build_task_head as build_polymax_head
        return build_polymax_head(config, num_predictions=num_predictions)
    raise UserError(f"unknown task kind {kind!r}; use panoptic, semantic, depth or normals")


def build_semantic_branch(config: ModelConfig, channels: tuple[int, ...]) -> nn.Module | None:
    """The training-only auxiliary semantic branch; ``channels`` are the backbone's 5 endpoint channels.

    Its width follows ``head.pixel_head_channels`` (256 in every official preset, as deeplab2's semantic
    decoder), with low-level projections of width / 4 and width / 8 (64 and 32)."""
    from polymax.model.heads.semantic_decoder import SemanticDecoderBranch, SemanticHeadBranch
    variant, num_logits = config.task.aux_semantic, config.dataset.num_classes + 1
    width = config.head.pixel_head_channels
    if variant == "decoder":
        return SemanticDecoderBranch(stage_channels=(channels[1], channels[2], channels[4]), num_logits=num_logits,
                                     endpoint_activation=endpoint_activation(config.backbone.name), channels=width,
                                     low_level_channels=(width // 4, width // 8))
    if variant == "head":
        return SemanticHeadBranch(in_channels=channels[4], num_logits=num_logits, channels=width)
    if variant == "none":
        return None
    raise UserError(f"task.aux_semantic must be 'decoder', 'head' or 'none', got {variant!r}")


def build_model(preset: str | ModelConfig, **overrides: Any) -> nn.Module:
    """Build the model of a preset name or ModelConfig (in training mode, freshly initialised)."""
    config = resolve_config(preset, **overrides)
    if config.architecture == "deeplabv3plus":        # the per-pixel baseline of the PolyMaX paper
        from polymax.polymax_build import build_baseline
        return build_baseline(config)
    if config.architecture != "kmax":
        raise UserError(f"unknown architecture {config.architecture!r}; use 'kmax' or 'deeplabv3plus'")
    from polymax.model.cluster_decoder.decoder import KMaXDecoder
    from polymax.model.cluster_decoder.mask_head import MaskHead
    from polymax.model.meta_arch import KMaX
    from polymax.model.pixel_decoder import KMaXPixelDecoder

    backbone = build_backbone(config.backbone)
    pd = config.pixel_decoder
    stride = backbone.strides[5 - len(pd.dims)]     # the endpoint the last decoder stage fuses with
    if stride != config.high_res_stride:
        raise UserError(f"config says high_res_stride={config.high_res_stride}, but a {len(pd.dims)}-stage pixel "
                        f"decoder on {config.backbone.name} outputs stride {stride}; fix high_res_stride")
    pixel_decoder = KMaXPixelDecoder(in_channels=tuple(backbone.channels), dims=pd.dims, num_blocks=pd.num_blocks,
                                     block_types=pd.block_types, num_heads=pd.num_heads)
    kd, head = config.kmax_decoder, config.head
    kmax_decoder = KMaXDecoder(pixel_channels=tuple(4 * d for d in pd.dims[:3]), num_layers=kd.num_layers,
                               num_queries=kd.num_queries, hidden=kd.hidden, num_heads=kd.num_heads, ffn=kd.ffn,
                               drop_path_keep=kd.drop_path_keep, mask_dim=head.mask_dim,
                               pixel_head_channels=head.pixel_head_channels, drop_query=kd.drop_query)
    mask_head = MaskHead(pixel_channels=4 * pd.dims[-1], cluster_channels=kd.hidden,
                         head_channels=head.pixel_head_channels, mask_dim=head.mask_dim)
    task_head = build_task_head(config, num_predictions=sum(kd.num_layers) + 1)
    return KMaX(backbone=backbone, pixel_decoder=pixel_decoder, kmax_decoder=kmax_decoder, mask_head=mask_head,
                task_head=task_head, semantic_branch=build_semantic_branch(config, tuple(backbone.channels)),
                config=config)


def build_postprocessor(config: ModelConfig):
    """The panoptic post-processor configured by ``config.postprocess`` and ``config.dataset``."""
    from polymax.tasks.panoptic_merge import PanopticPostProcessor
    pp, info = config.postprocess, config.dataset
    return PanopticPostProcessor(
        thing_classes=info.thing_classes, num_classes=info.num_classes, ignore_label=info.ignore_label,
        label_divisor=info.label_divisor, pixel_confidence=pp.pixel_confidence,
        thing_confidence=pp.thing_confidence, stuff_confidence=pp.stuff_confidence, overlap=pp.overlap,
        reorder_class_weight=pp.reorder_class_weight, reorder_mask_weight=pp.reorder_mask_weight,
        thing_area_limit=pp.thing_area_limit, stuff_area_limit=pp.stuff_area_limit)
