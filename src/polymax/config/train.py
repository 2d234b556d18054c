"""Typed training configuration: :class:`TrainConfig` and its sections, YAML files and ``--set`` overrides.

A run is described by one TrainConfig. It comes from the defaults below, then a YAML file (``configs/*.yaml``,
flat sections mirroring these dataclasses), then command-line flags and ``--set section.field=value``
overrides, in that order. The resolved config is printed at the start of a run and saved next to every
checkpoint (``train_config.yaml``), so a checkpoint always says how it was made.

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
    aux_semantic: the training-only auxiliary semantic branch, 'decoder' / 'head' / 'none' (None = the preset's;
    'none' for data without semantic labels)."""

    preset: str = "polymax_tiny_synth_panoptic"
    init: str | None = None
    backbone_drop_path_keep: float | None = None
    decoder_drop_path_keep: float | None = None
    drop_query: float | None = None
    aux_semantic: str | None = None


@dataclass
class DataOptions:
    """dataset / root / split: passed to ``polymax.data.build_dataset``. batch_size: the *global* batch of one
    optimiser step, summed over ranks and accumulation micro-batches. accumulate: micro-batches per step.
    crop_size: training crop (H, W); None = the preset's crop. workers: loader processes per rank."""

    dataset: str = "synth"
    root: str | None = None
    split: str = "train"
    eval_split: str = "val"
    batch_size: int = 64
    accumulate: int = 1
    crop_size: tuple[int, int] | None = None
    workers: int = 2


@dataclass
class AugmentOptions:
    """Training augmentation (spec §5.1): resize the longer side to resize_longer_side (None = keep; COCO and
    ADE20K use the crop size), random scale in [min_scale, max_scale] by scale_step, AutoAugment (simple
    policy) with magnitudes × autoaugment_magnitude (0 = off), pad + random crop, horizontal flip, panoptic
    copy-paste. enabled False: only pad / crop to the crop size."""

    enabled: bool = True
    resize_longer_side: int | None = None
    min_scale: float = 0.3
    max_scale: float = 1.7
    scale_step: float = 0.1
    autoaugment_magnitude: float = 1.0
    copy_paste: bool = True
    flip: bool = True


@dataclass
class OptimOptions:
    """Keras-legacy Adam with decoupled weight decay on kernels; linear warm-up then polynomial decay."""

    lr: float = 5e-4
    weight_decay: float = 0.05
    backbone_lr_multiplier: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7
    warmup_steps: int = 5000
    poly_power: float = 0.9


@dataclass
class LossOptions:
    """kMaX loss weights and sampling (spec §2). inst_disc_*: pixel-contrastive term (samples K, sampling
    temperature τ_s: 1.5 COCO / ADE20K, 0.6 Cityscapes). semantic_top_k: hard-pixel fraction of the auxiliary
    semantic loss (Cityscapes 0.2). semantic_samples: Gumbel-top-k pixel sub-sampling of that loss (0 = off,
    deeplab2's released behaviour)."""

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


@dataclass
class TrainConfig:
    """One training run. steps: optimiser steps. precision: 'fp32' or 'bf16' (autocast, CPU and GPU).
    eval_every / checkpoint_every: in steps (0 = only at the end). eval_batches: limit evaluation to this
    many batches (None = the whole split). sync_bn: SyncBatchNorm under DDP on GPUs (deeplab2's default;
    turn off to fine-tune with plain per-GPU BN). device: 'auto', 'cpu', 'cuda'. progress: show a tqdm bar.
    tensorboard: write TensorBoard scalars to out_dir/tb when the `log` extra is installed."""

    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataOptions = field(default_factory=DataOptions)
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    loss: LossOptions = field(default_factory=LossOptions)
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

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise UserError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
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


def load_config(path: str | Path | None = None, *, overrides: list[str] = ()) -> TrainConfig:
    """Defaults ← the YAML file at ``path`` (if any) ← ``section.field=value`` overrides."""
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
    return config


def apply_override(config: TrainConfig, assignment: str) -> TrainConfig:
    """A copy of ``config`` with one field set from ``'section.field=value'`` (or ``'field=value'`` for the
    top-level fields). The value is parsed as YAML and converted to the field's declared type."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {assignment!r} must look like section.field=value (e.g. optim.lr=1e-4)")
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
        if origin is tuple:
            if not isinstance(value, (list, tuple)) or len(value) != len(args):
                raise TypeError
            return tuple(_coerce(v, a, where=where) for v, a in zip(value, args))
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
