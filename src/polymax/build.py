"""The one place where a ModelConfig meets the constructors.

``build_model("kmax_r50_coco")`` or ``build_model(config)`` → :class:`polymax.model.meta_arch.KMaX`.
Overrides use the dialect of ``--set`` (dotted keys; ``section__field`` is also accepted):

* a top-level field of ModelConfig: ``build_model("kmax_r50_coco", crop_size=(641, 641))``, or a whole
  section: ``dataset=my_dataset_info``;
* a field of a section: ``**{"kmax_decoder.num_queries": 256}``, ``kmax_decoder__num_queries=256``;
* a field of one task: ``**{"tasks.depth.max_depth": 20.0}``, ``tasks__depth__max_depth=20.0``.

Task heads, criteria and the rest of a task come from ``polymax.tasks.TASKS``: nothing here switches on a task
name.
"""

from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass, replace
from typing import Any

from torch import nn

from polymax.config.model import BackboneConfig, ModelConfig
from polymax.errors import UserError
from polymax.tasks import get_task
from polymax.tokenizer.config import TokenizerConfig


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
    for key, value in overrides.items():
        path = key.replace("__", ".").split(".")
        if path[0] not in top:
            raise UserError(f"unknown override {key!r}; use one of {sorted(top)}, section.field or "
                            "tasks.NAME.field")
        if len(path) == 1:
            config = replace(config, **{path[0]: value})
        elif path[0] == "tasks" and len(path) == 3:
            config.task(path[1])                        # a one-line error for a task the model lacks
            config = replace(config, tasks=tuple(_set_field(task, path[2], value, key) if task.name == path[1]
                                                 else task for task in config.tasks))
        elif len(path) == 2 and is_dataclass(getattr(config, path[0])):
            config = replace(config, **{path[0]: _set_field(getattr(config, path[0]), path[1], value, key)})
        else:
            raise UserError(f"override {key!r}: use field, section.field or tasks.NAME.field")
    return config


def _set_field(section: Any, name: str, value: Any, key: str) -> Any:
    known = {f.name for f in fields(section)}
    if name not in known:
        raise UserError(f"unknown override {key!r}; {type(section).__name__} has {sorted(known)}")
    return replace(section, **{name: value})


def build_backbone(config: BackboneConfig, *, checkpoint: bool = False) -> nn.Module:
    """``checkpoint``: gradient checkpointing of the stages in training (``ModelConfig.checkpoint_backbone``)."""
    keep = config.drop_path_keep
    if config.name == "resnet50":
        from polymax.model.backbones.resnet import resnet50
        return resnet50(drop_path_keep=keep, checkpoint=checkpoint)
    if config.name == "resnet_tiny":
        from polymax.model.backbones.resnet import resnet_tiny
        return resnet_tiny(width=config.width, drop_path_keep=keep, checkpoint=checkpoint)
    if config.name == "axial_resnet50":
        from polymax.model.backbones.axial_resnet import axial_resnet50
        return axial_resnet50(drop_path_keep=keep, checkpoint=checkpoint)
    if config.name in ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"):
        from polymax.model.backbones import convnext
        return getattr(convnext, config.name)(drop_path_keep=keep, checkpoint=checkpoint)
    raise UserError(f"unknown backbone {config.name!r}; use resnet50, axial_resnet50, "
                    "convnext_{tiny,small,base,large} or resnet_tiny")


def endpoint_activation(backbone_name: str) -> str:
    """The activation that turns a backbone's un-activated endpoints into deeplab2's resN maps."""
    return "relu" if backbone_name in ("resnet50", "resnet_tiny") else "gelu"




def build_semantic_branch(config: ModelConfig, channels: tuple[int, ...]) -> tuple[nn.Module | None, tuple[str, ...]]:
    """The training-only auxiliary semantic branch and the tasks it serves (segmentation tasks whose
    ``aux_semantic`` is not 'none'; they must agree on the variant); ``channels``: the backbone's 5 endpoints.

    Its width follows ``head.pixel_head_channels`` (256 in every official preset, as deeplab2's semantic
    decoder), with low-level projections of width / 4 and width / 8 (64 and 32)."""
    from polymax.model.heads.semantic_decoder import SemanticDecoderBranch, SemanticHeadBranch

    for task in config.tasks:
        if task.aux_semantic not in ("decoder", "head", "none"):
            raise UserError(f"tasks.{task.name}.aux_semantic must be 'decoder', 'head' or 'none', "
                            f"got {task.aux_semantic!r}")
    served = [task for task in config.tasks if get_task(task.name).needs_classes and task.aux_semantic != "none"]
    variants = {task.aux_semantic for task in served}
    if len(variants) > 1:
        raise UserError(f"tasks {[t.name for t in served]} ask for different auxiliary semantic branches "
                        f"{sorted(variants)}; use one")
    if not served:
        return None, ()
    variant, num_logits = variants.pop(), config.dataset.num_classes + 1
    width = config.head.pixel_head_channels
    if variant == "decoder":
        branch = SemanticDecoderBranch(stage_channels=(channels[1], channels[2], channels[4]), num_logits=num_logits,
                                       endpoint_activation=endpoint_activation(config.backbone.name), channels=width,
                                       low_level_channels=(width // 4, width // 8))
    else:
        branch = SemanticHeadBranch(in_channels=channels[4], num_logits=num_logits, channels=width)
    return branch, tuple(task.name for task in served)


def build_model(preset: str | ModelConfig | TokenizerConfig, **overrides: Any) -> nn.Module:
    """Build the model of a preset name or ModelConfig (in training mode, freshly initialised); a tokenizer
    preset or TokenizerConfig (``polymax.tokenizer``) builds that VQ-VAE."""
    from polymax.tokenizer.build import build_tokenizer_model, is_tokenizer
    if is_tokenizer(preset):
        return build_tokenizer_model(preset, **overrides)
    config = resolve_config(preset, **overrides)
    if not config.tasks or len(set(config.task_names)) != len(config.tasks):
        raise UserError(f"preset {config.preset!r} must list each task once, got {list(config.task_names)}")
    tasks = {task.name: get_task(task.name) for task in config.tasks}
    if config.architecture == "deeplabv3plus":        # the per-pixel baseline of the PolyMaX paper
        return build_baseline(config)
    if config.architecture != "kmax":
        raise UserError(f"unknown architecture {config.architecture!r}; use 'kmax' or 'deeplabv3plus'")
    from polymax.model.cluster_decoder.decoder import KMaXDecoder
    from polymax.model.cluster_decoder.mask_head import MaskHead
    from polymax.model.meta_arch import KMaX
    from polymax.model.pixel_decoder import KMaXPixelDecoder

    backbone = build_backbone(config.backbone, checkpoint=config.checkpoint_backbone)
    pd = config.pixel_decoder
    stride = backbone.strides[5 - len(pd.dims)]     # the endpoint the last decoder stage fuses with
    if stride != config.high_res_stride:
        raise UserError(f"config says high_res_stride={config.high_res_stride}, but a {len(pd.dims)}-stage pixel "
                        f"decoder on {config.backbone.name} outputs stride {stride}; fix high_res_stride")
    pixel_decoder = KMaXPixelDecoder(in_channels=tuple(backbone.channels), dims=pd.dims, num_blocks=pd.num_blocks,
                                     block_types=pd.block_types, num_heads=pd.num_heads)
    kd, head = config.kmax_decoder, config.head
    groups = {task.name: task.num_queries for task in config.tasks if task.num_queries > 0}
    shared = kd.num_queries if len(groups) < len(config.tasks) else 0      # no shared group nobody reads
    check_task_queries(config)
    kmax_decoder = KMaXDecoder(pixel_channels=tuple(4 * d for d in pd.dims[:3]), num_layers=kd.num_layers,
                               num_queries=shared, hidden=kd.hidden, num_heads=kd.num_heads, ffn=kd.ffn,
                               drop_path_keep=kd.drop_path_keep, mask_dim=head.mask_dim,
                               pixel_head_channels=head.pixel_head_channels, drop_query=kd.drop_query,
                               group_sizes=groups, task_names=config.task_names if kd.task_conditioned else (),
                               task_queries=kd.task_queries, high_res_channels=4 * pd.dims[-1],
                               task_query_values=kd.task_query_values)
    mask_head = MaskHead(pixel_channels=4 * pd.dims[-1], cluster_channels=kd.hidden,
                         head_channels=head.pixel_head_channels, mask_dim=head.mask_dim)
    count = sum(kd.num_layers) + 1                  # one prediction per kMaX layer, and the final one
    heads = {task.name: tasks[task.name].build_head(config, task, num_predictions=count,
                                                    num_queries=task.num_queries or kd.num_queries)
             for task in config.tasks}
    if kd.task_queries == "oneformer":
        # OneFormer: one set of weights answers every task of the shared group, only the task prompt differs —
        # so those tasks share one head (and a mixed-task batch trains all of it on every step). Only heads of
        # one kind are shared: depth and normals on the shared group read other values than a class head.
        first: dict[type, str] = {}
        for task in config.tasks:
            if task.num_queries == 0:
                heads[task.name] = heads[first.setdefault(type(heads[task.name]), task.name)]
    branch, semantic_tasks = build_semantic_branch(config, tuple(backbone.channels))
    return KMaX(backbone=backbone, pixel_decoder=pixel_decoder, kmax_decoder=kmax_decoder, mask_head=mask_head,
                heads=heads, semantic_branch=branch, semantic_tasks=semantic_tasks, config=config)


def check_task_queries(config: ModelConfig) -> None:
    """One-line errors for ``kmax_decoder.task_queries``: a known value, and with 'oneformer' a prompt for every
    task of the shared group (the tasks with ``num_queries`` of their own keep learned centres)."""
    from polymax.model.cluster_decoder.task_queries import MEMORY_VALUES, TASK_PROMPT_IDS

    kd = config.kmax_decoder
    if kd.task_queries not in ("learned", "oneformer"):
        raise UserError(f"kmax_decoder.task_queries must be 'learned' or 'oneformer', got {kd.task_queries!r}")
    if kd.task_query_values not in MEMORY_VALUES:
        raise UserError(f"kmax_decoder.task_query_values must be one of {list(MEMORY_VALUES)}, "
                        f"got {kd.task_query_values!r}")
    if kd.task_queries != "oneformer":
        return
    if kd.num_queries < 2:
        raise UserError("kmax_decoder.task_queries='oneformer' needs kmax_decoder.num_queries >= 2")
    lacking = [task.name for task in config.tasks if task.num_queries == 0 and task.name not in TASK_PROMPT_IDS]
    if lacking:
        raise UserError(f"kmax_decoder.task_queries='oneformer': tasks {lacking} have no OneFormer prompt (only "
                        f"{sorted(TASK_PROMPT_IDS)} do); give them a query group of their own (tasks.NAME.num_queries)")


def build_baseline(config: ModelConfig) -> nn.Module:
    """The per-pixel DeepLabv3+ model for ``config`` (backbone, data set, tasks; decoder width
    ``head.pixel_head_channels``)."""
    from polymax.model.baseline import DeepLabV3Plus, DeepLabV3PlusDecoder

    width = config.head.pixel_head_channels
    heads = {}
    for task in config.tasks:
        head = get_task(task.name).build_baseline_head(config, task, in_channels=width)
        if head is None:
            raise UserError(f"the deeplabv3plus baseline has no head for the {task.name} task")
        heads[task.name] = head
    backbone = build_backbone(config.backbone, checkpoint=config.checkpoint_backbone)
    if config.baseline_output_stride == 16:
        from polymax.model.baseline import atrous_last_stage
        atrous_last_stage(backbone, name=config.backbone.name)
    elif config.baseline_output_stride != 32:
        raise UserError(f"baseline_output_stride must be 16 or 32, got {config.baseline_output_stride}")
    channels = tuple(backbone.channels)
    decoder = DeepLabV3PlusDecoder(stage2_channels=channels[1], stage5_channels=channels[4], channels=width,
                                   endpoint_activation=endpoint_activation(config.backbone.name))
    return DeepLabV3Plus(backbone=backbone, decoder=decoder, heads=heads, config=config)


def build_criterion(config: ModelConfig, task: str | None = None, train_config: Any = None) -> nn.Module:
    """``criterion(run: TaskRun, targets) -> LossTerms`` of one task of ``config`` (None: its only task), with
    the task's loss section of ``train_config`` (a TrainConfig; None = the defaults). Random pixel sampling
    (instance discrimination) draws from torch's global generator, whose state the checkpoints save."""
    from polymax.config.train import TrainConfig

    task_config = config.task(task)
    definition = get_task(task_config.name)
    options = getattr(train_config or TrainConfig(), definition.loss_section)
    return definition.build_criterion(config, task_config, options)
