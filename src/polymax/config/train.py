"""Typed training configuration: :class:`TrainConfig` and its sections, YAML files and ``--set`` overrides.

A run is described by one TrainConfig. It comes from the defaults below, then a YAML file (``configs/*.yaml``,
flat sections mirroring these dataclasses), then command-line flags and ``--set section.field=value``
overrides, in that order. ``--set model.<ModelConfig path>=value`` (``model.kmax_decoder.num_queries=32``,
``model.tasks.depth.max_depth=20``) overrides the model itself: it is checked and typed against
:class:`~polymax.config.model.ModelConfig` here, kept in ``model.overrides`` and handed to ``build_model``.
The resolved config is printed at the start of a run and saved next to every checkpoint
(``train_config.yaml``), so a checkpoint always says how it was made.

Defaults are the official kMaX-DeepLab COCO recipe (spec §5) except where a value only makes sense per run
(preset, data set, steps, output folder).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from polymax.errors import UserError


@dataclass
class ModelOptions:
    """Which model to train. preset: a name of ``polymax.PRESETS``. init: optional model directory
    (``save_pretrained`` format) whose weights initialise the model (fine-tuning, converted checkpoints).
    backbone_drop_path_keep / decoder_drop_path_keep: override the preset's drop-path keep probabilities
    (None = the preset's). drop_query: paper-only query dropout fraction (None = the preset's).
    aux_semantic: the training-only auxiliary semantic branch of every segmentation task of the model, 'decoder' /
    'head' / 'none' (None = the preset's; 'none' for data without semantic labels).
    overrides: ModelConfig path → value, in ``build_model``'s dotted dialect (``kmax_decoder.num_queries``,
    ``tasks.depth.max_depth``); applied after the fields above, so a per-task setting beats ``aux_semantic``.
    backbone_init: optional ImageNet checkpoint for the backbone alone (ResNet-50: torchvision / timm layout;
    ConvNeXt: the official or timm layout; safetensors or weights-only .pth), loaded before ``init``.
    init_depth_range: when ``init``'s depth head was trained for another depth range (Taskonomy 128 m → NYUD-v2
    10 m): 'rescale' (the preset's range; the same weights then scale every bin, which is printed) or 'keep'
    (the model takes the source's range, so each bin keeps its metres; evaluation still caps at the data's
    range). An explicit ``model.tasks.depth.max_depth`` wins over 'keep'.
    only_tasks: the preset's tasks to train, a subset in any order (None = all of them), e.g. ``[depth, normals]``
    of a model for every dense task; the model is built with those tasks' heads only."""

    preset: str = "polymax_tiny_synth_panoptic"
    init: str | None = None
    backbone_drop_path_keep: float | None = None
    decoder_drop_path_keep: float | None = None
    drop_query: float | None = None
    aux_semantic: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    backbone_init: str | None = None
    init_depth_range: str = "rescale"
    only_tasks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Keys normalised to dots and values typed as the ModelConfig field (YAML lists → tuples, 20 → 20.0),
        # so a resolved config saved as YAML and read back is equal to the one that ran.
        checked = {}
        for key, value in self.overrides.items():
            path = str(key).replace("__", ".")
            if path in MODEL_ALIASES:
                raise UserError(f"model.overrides: set {path} with model.{MODEL_ALIASES[path]}")
            checked[path] = _coerce(value, _model_field_type(path), where=f"model.{path}")
        self.overrides = checked
        if self.init_depth_range not in ("rescale", "keep"):
            raise UserError(f"model.init_depth_range must be 'rescale' or 'keep', got {self.init_depth_range!r}")


# ModelConfig paths that already have a ModelOptions field: ``--set model.<path>`` sets that field, so one run
# never holds two values for one setting.
MODEL_ALIASES = {"backbone.drop_path_keep": "backbone_drop_path_keep",
                 "kmax_decoder.drop_path_keep": "decoder_drop_path_keep",
                 "kmax_decoder.drop_query": "drop_query"}


@dataclass
class DataOptions:
    """dataset / root / split: passed to ``polymax.data.build_dataset``. batch_size: the *global* batch of one
    optimiser step, summed over ranks and accumulation micro-batches. accumulate: micro-batches per step.
    crop_size: training crop (H, W); None = the preset's crop. workers: loader processes per rank.
    check: decode every training sample before step 1 (the checks of ``polymax data inspect``; sets drawn on the
    fly are not checked); false for huge sets (``--skip-data-check``). normals_dir: NYUD-v2's surface-normal PNGs
    (8-bit GeoNet / Bae layout). options: further keyword options of the data set's loader (``list``: lists,
    depth_root, depth_scale, protocol, eval_crop, min_depth, max_depth; ``nyuv2``: depth, normals_naming)."""

    dataset: str = "synth"
    root: str | None = None
    split: str = "train"
    eval_split: str = "val"
    batch_size: int = 64
    accumulate: int = 1
    crop_size: tuple[int, int] | None = None
    workers: int = 2
    check: bool = True
    normals_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def loader_options(self) -> dict[str, Any]:
        """The keyword options ``build_dataset`` gets for this data set (``options`` plus ``normals_dir``)."""
        return {**self.options, **({"normals_dir": self.normals_dir} if self.normals_dir is not None else {})}


@dataclass
class AugmentOptions:
    """Training augmentation (spec §5.1): resize the longer side to resize_longer_side (None = keep; COCO and
    ADE20K use the crop size), random scale in [min_scale, max_scale] by scale_step, AutoAugment (simple
    policy) with magnitudes × autoaugment_magnitude (0 = off), pad + random crop, horizontal flip, panoptic
    copy-paste. enabled False: only pad / crop to the crop size.
    recipe: 'kmax' (the above; panoptic / semantic training) or the PolyMaX depth / normals recipe of appendix A
    (BinsFormer's NYU pipeline): 'depth' = the data set's border crop (its protocol's, e.g. NYU 45:472, 43:608),
    random rotation ±rotation_degrees (2.5°) with probability 0.5, colour jitter (gamma, brightness, channel gains)
    with probability color_jitter_prob (0.5), random crop, horizontal flip; 'normals' = the same without
    rotation. Both ignore the scale / AutoAugment / copy-paste fields (no random scaling).
    rotation_degrees / color_jitter_prob: None = the recipe's value (0 for 'kmax')."""

    enabled: bool = True
    resize_longer_side: int | None = None
    min_scale: float = 0.3
    max_scale: float = 1.7
    scale_step: float = 0.1
    autoaugment_magnitude: float = 1.0
    copy_paste: bool = True
    flip: bool = True
    recipe: str = "kmax"
    rotation_degrees: float | None = None
    color_jitter_prob: float | None = None

    def __post_init__(self) -> None:
        if self.recipe not in AUGMENT_RECIPES:
            raise UserError(f"augment.recipe must be one of {', '.join(AUGMENT_RECIPES)}, got {self.recipe!r}")


# Recipe → (rotation degrees, colour-jitter probability) when the fields are left at None.
AUGMENT_RECIPES = {"kmax": (0.0, 0.0), "depth": (2.5, 0.5), "normals": (0.0, 0.5)}


@dataclass
class OptimOptions:
    """Keras-legacy Adam with decoupled weight decay on kernels; linear warm-up then polynomial decay.
    warmup_steps: None = scaled to the run (:func:`scaled_warmup`: the COCO recipe's 5000 of 150 000 steps,
    i.e. 1/30 of ``steps``, at most 5000); a value given in a recipe or with ``--set`` is used as written."""

    lr: float = 5e-4
    weight_decay: float = 0.05
    backbone_lr_multiplier: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7
    warmup_steps: int | None = None
    poly_power: float = 0.9


@dataclass
class LossOptions:
    """The segmentation tasks' kMaX loss weights and sampling (spec §2). inst_disc_*: pixel-contrastive term
    (samples K, sampling temperature τ_s: 1.5 COCO / ADE20K, 0.6 Cityscapes). semantic_top_k: hard-pixel
    fraction of the auxiliary semantic loss (Cityscapes 0.2). semantic_samples: Gumbel-top-k pixel sub-sampling
    of that loss (0 = off, deeplab2's released behaviour). task_weights: task name → factor on all of that task's
    loss terms in a model with several tasks (e.g. ``{depth: 2, normals: 2}``; a task not named: 1).
    token_box_weight / token_ce_weight / token_mask_weight: the instance_tokens task only (AiT's instance masks as
    tokens, docs/ait.md): the box L1, the mask-token cross-entropy and the dice of the soft-decoded crop of every
    matched cluster (AiT: 5.0 on the decoded mask)."""

    class_weight: float = 3.0
    dice_weight: float = 3.0
    mask_id_weight: float = 0.3
    inst_disc_weight: float = 1.0
    inst_disc_samples: int = 4096
    inst_disc_temperature: float = 1.5
    semantic_weight: float = 1.0
    semantic_top_k: float = 1.0
    semantic_samples: int = 0
    semantic_small_instance_area: int = 0
    semantic_small_instance_weight: float = 1.0
    task_weights: dict[str, float] = field(default_factory=dict)
    token_box_weight: float = 5.0
    token_ce_weight: float = 1.0
    token_mask_weight: float = 5.0

    def __post_init__(self) -> None:
        checked = {}
        for task, weight in self.task_weights.items():
            value = _coerce(weight, float, where=f"loss.task_weights.{task}")
            if value < 0:
                raise UserError(f"loss.task_weights.{task} must be at least 0, got {weight}")
            checked[str(task)] = value
        self.task_weights = checked


@dataclass
class DepthLossOptions:
    """Depth-loss weights; None keeps the task's recipe (``TaskConfig.depth_loss``: 'silog' = SILog 1, relative
    squared 1, gradient 0.5; 'charbonnier' = Charbonnier 1). A weight of 0 skips the term."""

    silog: float | None = None
    relative_squared: float | None = None
    gradient: float | None = None
    charbonnier: float | None = None


@dataclass
class NormalsLossOptions:
    """Surface-normal loss: 'l2' (PolyMaX) or 'angular', and its weight."""

    loss: str = "l2"
    weight: float = 1.0


@dataclass
class DepthTokensLossOptions:
    """The depth_tokens task (AiT): weights of the token cross-entropy of the final prediction, of each kMaX
    layer's auxiliary prediction, and of the SILog (λ = silog_lambda) of the soft-decoded depth (AiT: 1.0, 0.5)."""

    token_ce: float = 1.0
    aux_token_ce: float = 1.0
    soft_silog: float = 1.0
    silog_lambda: float = 0.5


@dataclass
class OneFormerOptions:
    """Joint training of a OneFormer model (``kmax_decoder.task_queries='oneformer'``; ignored otherwise).

    Also read by a model for every dense task (``polymax_multitask_*``, docs/multitask.md).
    task_sampling: 'image' (each image trains one task, drawn among those its labels support, as OneFormer),
    'all' (each image trains every task its labels support), 'shared' (the tasks of the shared task-guided group
    draw one per image, in one pass, as OneFormer; the tasks with a query group of their own train on every image)
    or 'auto' (per image when every task reads the task-guided group, as OneFormer; every supported task
    otherwise).
    {panoptic,semantic,instance,depth,normals}_probability: how often an image draws each task (normalised over
    the model's tasks; one task alone = single-task training). The query–text contrastive loss (training only):
    its weight (0 = off), initial temperature, and the text mapper (width, layers, heads, causal attention,
    num_context learned context rows)."""

    task_sampling: str = "auto"
    panoptic_probability: float = 1.0 / 3.0
    semantic_probability: float = 1.0 / 3.0
    instance_probability: float = 1.0 / 3.0
    depth_probability: float = 1.0 / 3.0
    normals_probability: float = 1.0 / 3.0
    contrastive_weight: float = 0.5
    temperature: float = 0.07
    text_width: int = 256
    text_layers: int = 6
    text_heads: int = 4
    text_causal: bool = True
    num_context: int = 16

    def __post_init__(self) -> None:
        if self.task_sampling not in TASK_SAMPLING:
            raise UserError(f"oneformer.task_sampling must be one of {', '.join(TASK_SAMPLING)}, "
                            f"got {self.task_sampling!r}")


TASK_SAMPLING = ("auto", "image", "all", "shared")
KEEP_BEST_MODES = ("auto", "min", "max")
TRACKERS = ("", "wandb", "mlflow")
# Metrics where lower is better (the last part of a name: ``depth/abs_rel`` → abs_rel); keep_best_mode 'auto'
# minimises these and maximises everything else (PQ, mIoU, AP, δ1, within 11.25°).
ERROR_METRICS = frozenset({"abs_rel", "rms", "sq_rel", "log10", "rms_log", "silog", "mean", "median"})


def best_mode(metric: str, mode: str) -> str:
    """'min' or 'max': ``mode`` itself, or for 'auto' what suits ``metric``."""
    if mode != "auto":
        return mode
    return "min" if metric.rsplit("/", 1)[-1] in ERROR_METRICS else "max"


@dataclass
class TrainConfig:
    """One training run. steps: optimiser steps. precision: 'fp32', 'bf16' (autocast, CPU and GPU) or 'fp16'
    (autocast with dynamic loss scaling, for GPUs without bf16).
    eval_every / checkpoint_every: in steps (0 = only at the end). eval_batches: limit evaluation to this
    many batches (None = the whole split). sync_bn: SyncBatchNorm under DDP on GPUs (deeplab2's default;
    turn off to fine-tune with plain per-GPU BN). device: 'auto', 'cpu', 'cuda'. progress: show a tqdm bar.
    tensorboard: write TensorBoard scalars to out_dir/tb when the `log` extra is installed.
    precise_bn_batches: at the end of the run, re-estimate every BatchNorm's running statistics over this many
    training batches with the final weights (:mod:`polymax.engine.precise_bn`); 0 = never. None (``polymax
    train`` decides, :func:`precise_bn_batches`): min(16, steps) batches when the run has at most
    PRECISE_BN_SHORT_RUN steps (a short fine-tune, whose momentum-0.01 statistics still lag the weights), else
    none. ``fit`` itself runs it only for a number set here.
    keep_best: also keep ``out_dir/best`` — the checkpoint of the best evaluation so far by this metric, named as
    the evaluation reports it (``pq``, ``miou``, ``abs_rel``; ``depth/abs_rel`` for a model with several tasks);
    '' = only ``last``. Needs ``eval_every``. keep_best_mode: 'min', 'max' or 'auto' (min for the error metrics
    :data:`ERROR_METRICS`, max otherwise). tracker: '' or an experiment tracker that also gets the scalars and the
    config, 'wandb' or 'mlflow' (the extra of that name)."""

    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataOptions = field(default_factory=DataOptions)
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    loss: LossOptions = field(default_factory=LossOptions)
    depth_loss: DepthLossOptions = field(default_factory=DepthLossOptions)
    normals_loss: NormalsLossOptions = field(default_factory=NormalsLossOptions)
    depth_tokens_loss: DepthTokensLossOptions = field(default_factory=DepthTokensLossOptions)
    oneformer: OneFormerOptions = field(default_factory=OneFormerOptions)
    steps: int = 150_000
    precision: str = "fp32"
    seed: int = 0
    eval_every: int = 0
    eval_batches: int | None = None
    checkpoint_every: int = 1000
    log_every: int = 10
    sync_bn: bool = True
    device: str = "auto"
    out_dir: str = "runs/train"
    progress: bool = True
    tensorboard: bool = True
    precise_bn_batches: int | None = None
    keep_best: str = ""
    keep_best_mode: str = "auto"
    tracker: str = ""

    def __post_init__(self) -> None:
        if self.keep_best_mode not in KEEP_BEST_MODES:
            raise UserError(f"keep_best_mode must be one of {', '.join(KEEP_BEST_MODES)}, got {self.keep_best_mode!r}")
        if self.tracker not in TRACKERS:
            raise UserError(f"tracker must be one of {', '.join(repr(t) for t in TRACKERS)}, got {self.tracker!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise UserError(f"precision must be 'fp32', 'bf16' or 'fp16', got {self.precision!r}")
        if self.steps <= 0:
            raise UserError(f"steps must be positive, got {self.steps}")
        if self.data.batch_size <= 0 or self.data.accumulate <= 0:
            raise UserError(f"batch size and accumulate must be positive, got {self.data.batch_size}, "
                            f"{self.data.accumulate}")
        if self.data.batch_size % self.data.accumulate:
            raise UserError(f"batch size {self.data.batch_size} is not divisible by accumulate={self.data.accumulate}")

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _build(cls, data, where="")


# Runs up to this many steps end with precise BN over PRECISE_BN_BATCHES batches unless told otherwise.
PRECISE_BN_SHORT_RUN, PRECISE_BN_BATCHES = 5000, 16


def precise_bn_batches(config: TrainConfig) -> int:
    """How many batches re-estimate the BatchNorm statistics at the end of this run (0 = none)."""
    if config.precise_bn_batches is not None:
        return max(config.precise_bn_batches, 0)
    return min(PRECISE_BN_BATCHES, config.steps) if config.steps <= PRECISE_BN_SHORT_RUN else 0


# The COCO recipe warms up for 5000 of its 150 000 steps; a shorter run keeps that fraction.
RECIPE_WARMUP, RECIPE_STEPS = 5000, 150_000


def scaled_warmup(steps: int) -> int:
    """Warm-up steps for a run of ``steps`` when none was asked for: 1/30 of the run, at most 5000."""
    return min(RECIPE_WARMUP, round(steps * RECIPE_WARMUP / RECIPE_STEPS))


def fill_step_defaults(config: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """``config`` with every step-count-dependent setting left open (None) chosen for its ``steps``, and one
    line per choice saying what was chosen. Values set in a recipe or an override are kept."""
    notes = []
    if config.optim.warmup_steps is None:
        warmup = scaled_warmup(config.steps)
        config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, warmup_steps=warmup))
        notes.append(f"warm-up: {warmup} steps (1/30 of {config.steps}, at most {RECIPE_WARMUP}; "
                     "--set optim.warmup_steps=N to choose)")
    return config, notes


def load_config(path: str | Path | None = None, *, overrides: list[str] = (),
                notes: list[str] | None = None) -> TrainConfig:
    """Defaults ← the YAML file at ``path`` (if any) ← ``section.field=value`` overrides, then the settings
    that depend on the run's length (:func:`fill_step_defaults`); what those chose is appended to ``notes``."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise UserError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from error
        if not isinstance(data, dict):
            raise UserError(f"{path} must hold a mapping of config sections, not {type(data).__name__}")
    config = _build(TrainConfig, data, where="")
    for override in overrides:
        config = apply_override(config, override)
    config, chosen = fill_step_defaults(config)
    if notes is not None:
        notes.extend(chosen)
    return config


def apply_override(config: TrainConfig, assignment: str) -> TrainConfig:
    """A copy of ``config`` with one field set from ``'section.field=value'`` (or ``'field=value'`` for the
    top-level fields). The value is parsed as YAML and converted to the field's declared type.
    ``'model.PATH=value'`` where PATH is not a ModelOptions field sets a ModelConfig field (``model.overrides``)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {assignment!r} must look like section.field=value (e.g. optim.lr=1e-4)")
    head, _, model_path = key.strip().partition(".")
    if head == "model" and model_path and model_path.split(".")[0] not in typing.get_type_hints(ModelOptions):
        return _apply_model_override(config, model_path.replace("__", "."), text)
    data = config.to_dict()
    *sections, name = key.strip().split(".")
    node, cls = data, TrainConfig
    for section in sections:
        hints = typing.get_type_hints(cls)
        if section not in hints or not dataclasses.is_dataclass(hints[section]):
            raise UserError(f"unknown config section {section!r} in {assignment!r}; sections: {_sections()}")
        node, cls = node[section], hints[section]
    hints = typing.get_type_hints(cls)
    if name not in hints or dataclasses.is_dataclass(hints[name]):
        raise UserError(f"unknown config field {key.strip()!r}; {cls.__name__} has {sorted(_leaf_fields(cls))}")
    node[name] = _coerce(yaml.safe_load(text) if text.strip() else None, hints[name], where=key.strip())
    return TrainConfig.from_dict(data)


def _apply_model_override(config: TrainConfig, path: str, text: str) -> TrainConfig:
    if path in MODEL_ALIASES:
        return apply_override(config, f"model.{MODEL_ALIASES[path]}={text}")
    value = yaml.safe_load(text) if text.strip() else None
    # ModelOptions.__post_init__ checks the path and types the value.
    model = dataclasses.replace(config.model, overrides={**config.model.overrides, path: value})
    return dataclasses.replace(config, model=model)


def _model_field_type(path: str) -> Any:
    """The declared type of the ModelConfig field at ``path`` (field, section.field or tasks.NAME.field)."""
    from polymax.config.model import ModelConfig, TaskConfig

    parts = path.split(".")
    hints = typing.get_type_hints(ModelConfig)
    if parts[0] not in hints:
        raise UserError(f"unknown model field {path!r}; ModelConfig has {sorted(hints)} (and ModelOptions has "
                        f"{sorted(typing.get_type_hints(ModelOptions))})")
    if parts[0] == "tasks":
        hints, parts = typing.get_type_hints(TaskConfig), parts[1:]
        if len(parts) != 2:
            raise UserError(f"model field {path!r}: set one task's field as model.tasks.NAME.field")
        return _leaf(hints, parts[1], path, TaskConfig.__name__)
    section = hints[parts[0]]
    if dataclasses.is_dataclass(section):
        if len(parts) != 2:
            raise UserError(f"model field {path!r}: set one field of the section as model.{parts[0]}.FIELD")
        return _leaf(typing.get_type_hints(section), parts[1], path, section.__name__)
    if len(parts) != 1:
        raise UserError(f"model field {path!r}: {parts[0]} has no fields")
    return section


def _leaf(hints: dict[str, Any], name: str, path: str, owner: str) -> Any:
    if name not in hints:
        raise UserError(f"unknown model field {path!r}; {owner} has {sorted(hints)}")
    return hints[name]


def _sections() -> list[str]:
    return [name for name, hint in typing.get_type_hints(TrainConfig).items() if dataclasses.is_dataclass(hint)]


def _leaf_fields(cls: type) -> list[str]:
    return [name for name, hint in typing.get_type_hints(cls).items() if not dataclasses.is_dataclass(hint)]


def _build(cls: type, data: dict[str, Any], *, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        place = f"section {where!r}" if where else "the top level"
        raise UserError(f"unknown config field(s) {unknown} at {place}; known: {sorted(hints)}")
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UserError(f"config section {path!r} must be a mapping, got {value!r}")
            kwargs[name] = _build(hint, value, where=path)
        else:
            kwargs[name] = _coerce(value, hint, where=path)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, *, where: str) -> Any:
    """Convert a YAML value to a field's type: ints for floats are fine, '1e-4' strings become floats
    (PyYAML reads exponents without a dot as strings), lists become tuples; anything else is an error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where=where)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if hint is int:
            if isinstance(value, bool) or not float(value).is_integer():
                raise TypeError
            return int(float(value))
        if hint is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:   # tuple[int, ...]: any length
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return tuple(_coerce(v, args[0], where=where) for v in value)
        if origin is tuple:
            if not isinstance(value, (list, tuple)) or len(value) != len(args):
                raise TypeError
            return tuple(_coerce(v, a, where=where) for v, a in zip(value, args))
        if origin is dict:          # ModelOptions.overrides: the values are typed by __post_init__
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
    except (TypeError, ValueError):
        pass
    else:
        raise UserError(f"config field {where!r} has an unsupported type {hint}")
    raise UserError(f"config field {where!r} expects {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _plain(value: Any) -> Any:
    """Tuples → lists (YAML / JSON friendly), recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
