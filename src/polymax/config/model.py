"""Typed model configuration. Only the builder (``polymax.build``) and the CLI read these objects;
modules take explicit keyword arguments. ``ModelConfig.to_dict`` / ``from_dict`` round-trip through
``config.json`` of a saved model.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from polymax.errors import UserError


@dataclass(frozen=True)
class BackboneConfig:
    """name: resnet50 | axial_resnet50 | convnext_{tiny,small,base,large} | resnet_tiny (small test/synthetic
    backbone). drop_path_keep: keep probability of the last block (1.0 = no drop path).
    width: base channel count for the small backbones (ignored by the standard ones)."""

    name: str = "resnet50"
    drop_path_keep: float = 1.0
    width: int = 64


@dataclass(frozen=True)
class PixelDecoderConfig:
    """Enhanced pixel decoder. dims: per-stage filters f at os32, os16, os8, os4[, os2]; stage output
    channels are 4f. block_types: 'axial' or 'bottleneck' per stage. num_heads: axial heads."""

    dims: tuple[int, ...] = (512, 256, 128, 64)
    num_blocks: tuple[int, ...] = (1, 5, 1, 1)
    block_types: tuple[str, ...] = ("axial", "axial", "bottleneck", "bottleneck")
    num_heads: int = 8


@dataclass(frozen=True)
class KMaXDecoderConfig:
    """kMaX transformer decoder. num_queries: K of the shared query group. num_layers: kMaX layers per
    pixel-decoder stage (os32, os16, os8). hidden: cluster-centre width (256); ffn: FFN width (2048);
    drop_path_keep on the three memory branches; drop_query: train with a random subset of this fraction of
    queries (paper only; 0 = off). task_conditioned: the initial centres depend on a learned embedding of the
    task being run (off in every kMaX / PolyMaX preset). task_queries: where the shared group's initial
    centres come from — 'learned' (kMaX: a learned table) or 'oneformer' (OneFormer's task-guided queries: N − 1
    queries read from the stride-4 pixel features under the task's prompt, plus the task token; the OneFormer
    and tiny multi-task presets). task_query_values: the values of that module's cross-attention — 'sine' (the
    reference's quirk: the sine positional encoding, image content only in the keys) or 'features' (the
    projected features)."""

    num_queries: int = 128
    num_layers: tuple[int, int, int] = (2, 2, 2)
    hidden: int = 256
    num_heads: int = 8
    ffn: int = 2048
    drop_path_keep: float = 0.8
    drop_query: float = 0.0
    task_conditioned: bool = False
    task_queries: str = "learned"
    task_query_values: str = "sine"


@dataclass(frozen=True)
class HeadConfig:
    """Prediction-head widths: pixel_head_channels (depthwise-separable 5x5 block), mask_dim (D of
    the L2-normalised pixel features and mask kernels)."""

    pixel_head_channels: int = 256
    mask_dim: int = 128


@dataclass(frozen=True)
class DatasetInfo:
    """What the model needs to know about the label space.

    class_names: contiguous classes 0..C-1 in the data set's order (void is not a class).
    thing_classes: indices of the thing classes. ignore_label marks void in semantic maps.
    label_divisor: panoptic id = class * label_divisor + instance.
    colors: one RGB triple per class, for pictures.
    """

    name: str = "coco"
    class_names: tuple[str, ...] = ()
    thing_classes: tuple[int, ...] = ()
    colors: tuple[tuple[int, int, int], ...] = ()
    ignore_label: int = 255
    label_divisor: int = 1000
    max_thing_id: int = 128

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class PostProcessConfig:
    """Mask-wise merging thresholds (kMaX spec §3)."""

    pixel_confidence: float = 0.4
    thing_confidence: float = 0.7
    stuff_confidence: float = 0.5
    overlap: float = 0.8
    reorder_class_weight: float = 1.0
    reorder_mask_weight: float = 1.0
    thing_area_limit: int = 400
    stuff_area_limit: int = 6400


@dataclass(frozen=True)
class TaskConfig:
    """One task head on the trunk and its settings (``polymax.tasks`` says what each name means).

    name: a key of ``polymax.tasks.TASKS`` — panoptic | semantic | instance | depth | normals | depth_tokens |
        instance_tokens.
    num_queries: 0 = the task reads the shared query group (``kmax_decoder.num_queries`` centres); N > 0 = the
        task owns a group of N cluster centres, with its own softmax and k-means argmax.
    aux_semantic: segmentation tasks: the training-only auxiliary semantic branch, 'decoder' (ASPP + low-level
        fusion, COCO/ADE), 'head' (head on stage5 only, Cityscapes) or 'none'.
    min_depth / max_depth: depth range in metres (bin centres are bounded to it).
    depth_loss: the depth recipe, 'silog' (SILog + relative squared + gradient, NYU) or 'charbonnier'
        (Taskonomy and the per-pixel baseline).
    depth_eval_crop: the depth evaluation crop, 'nyu' (Eigen's crop) or None.
    value_mlp_layers: depth of the per-cluster MLP for depth / normals.
    tokenizer / tokenizer_weights / token_decode: the depth_tokens and instance_tokens tasks (AiT, docs/ait.md):
        the frozen VQ-VAE's preset ('' = vqvae_tiny_synth_depth / vqvae_tiny_synth_mask), a tokenizer model folder
        its weights start from ('' = none), and how inference decodes the token distributions, 'soft' (AiT) or
        'hard' (argmax).
    """

    name: str = "panoptic"
    num_queries: int = 0
    aux_semantic: str = "decoder"
    min_depth: float = 1e-3
    max_depth: float = 10.0
    depth_loss: str = "silog"
    depth_eval_crop: str | None = None
    value_mlp_layers: int = 2
    tokenizer: str = ""
    tokenizer_weights: str = ""
    token_decode: str = "soft"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved as ``config.json`` next to the weights.

    architecture: 'kmax' (cluster prediction) or 'deeplabv3plus' (the per-pixel baseline).
    tasks: the task heads on the trunk, in order; one per task name.
    high_res_stride: stride of the final per-pixel embedding (4, or 2 for Cityscapes R50 / MaX-S).
    baseline_output_stride: 'deeplabv3plus' only: 16 = the paper's DeepLabv3+ (ResNet stage5 atrous, rate 2, ASPP
        6/12/18 at stride 16); 32 = stage5 strided as in kMaX (what baseline folders saved without the field
        were, so they load unchanged).
    checkpoint_backbone: gradient checkpointing of the backbone's stages in training (less activation memory,
        about one more backbone forward pass per step; the same outputs, gradients and BatchNorm statistics).
        No effect on inference. Folders saved without the field load with it off.
    """

    preset: str = ""
    architecture: str = "kmax"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    kmax_decoder: KMaXDecoderConfig = field(default_factory=KMaXDecoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    dataset: DatasetInfo = field(default_factory=DatasetInfo)
    postprocess: PostProcessConfig = field(default_factory=PostProcessConfig)
    tasks: tuple[TaskConfig, ...] = (TaskConfig(),)
    high_res_stride: int = 4
    baseline_output_stride: int = 32
    # Preprocessing: inputs are resized / padded to a 32k+1 size; `crop_size` is the training / eval
    # geometry (H, W) the preset was designed for.
    crop_size: tuple[int, int] = (1281, 1281)
    checkpoint_backbone: bool = False

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks)

    def task(self, name: str | None = None) -> TaskConfig:
        """The config of task ``name``; without a name, the model's only task (a UserError when it has several)."""
        if name is None:
            if len(self.tasks) != 1:
                raise UserError(f"model {self.preset!r} has tasks {list(self.task_names)}; choose one with --task NAME "
                                "(task=NAME in Python)")
            return self.tasks[0]
        for task in self.tasks:
            if task.name == name:
                return task
        raise UserError(f"model {self.preset!r} has no task {name!r}; choose one of {list(self.task_names)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild a saved config; every field is checked against its declared type (and sizes against their
        range), so a malformed ``config.json`` fails with one line naming the field."""
        if not isinstance(data, dict):
            raise UserError(f"the model config must be a mapping of sections, got {type(data).__name__}")
        data = migrate_config_dict(data)
        missing = [f.name for f in fields(cls) if f.name in _SECTIONS and f.name not in data]
        if missing:
            raise UserError(f"the model config has no section {missing[0]!r} (sections: {', '.join(_SECTIONS)}); "
                            "the file is incomplete")
        return _from_dict(cls, data)


# Sections every saved config holds (release 0.1 included, after migration).
_SECTIONS = ("backbone", "pixel_decoder", "kmax_decoder", "head", "dataset", "postprocess", "tasks")
# Sizes that must be at least 1 (other whole numbers must be at least 0, other numbers finite and ≥ 0).
_POSITIVE = {"width", "dims", "num_blocks", "num_heads", "hidden", "ffn", "pixel_head_channels", "mask_dim",
             "label_divisor", "max_thing_id", "high_res_stride", "crop_size", "value_mlp_layers", "max_depth",
             "min_depth", "drop_path_keep"}


def migrate_config_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A ``config.json`` model config written by release 0.1 (one ``task`` with a ``kind``) in today's layout.

    The data-set-name recipes of 0.1 become task settings: depth on Taskonomy and the per-pixel baseline trained
    with the Charbonnier loss, depth on NYUD-v2 was evaluated on Eigen's crop.
    """
    if "task" not in data:
        return data
    data = dict(data)
    old = dict(data.pop("task"))
    name = old.pop("kind", "panoptic")
    dataset = (data.get("dataset") or {}).get("name")
    robust = data.get("architecture") == "deeplabv3plus" or dataset == "taskonomy"
    old["depth_loss"] = "charbonnier" if robust else "silog"
    old["depth_eval_crop"] = "nyu" if dataset == "nyuv2" else None
    data["tasks"] = [{"name": name, **old}]
    return data


def _from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Rebuild a (nested) frozen dataclass from plain JSON data; lists become tuples; each value is checked."""
    if not isinstance(data, dict):
        raise UserError(f"config section {where!r} must be a mapping, got {data!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"config has unknown fields {unknown} for {cls.__name__}; "
                        "it was written by a newer or different version of polymax")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        hint = hints[name]
        if is_dataclass(hint):
            kwargs[name] = value if isinstance(value, hint) else _from_dict(hint, value, path)
        elif typing.get_origin(hint) is tuple and is_dataclass(typing.get_args(hint)[0]):
            # a tuple of sections (ModelConfig.tasks): each element is rebuilt as the declared element type
            item_type = typing.get_args(hint)[0]
            if not isinstance(value, (list, tuple)) or not value:
                raise UserError(f"config field {path!r} must be a non-empty list of sections, got {value!r}")
            kwargs[name] = tuple(item if isinstance(item, item_type) else _from_dict(item_type, item, f"{path}.{i}")
                                 for i, item in enumerate(value))
        else:
            kwargs[name] = _checked(value, hint, path, positive=name in _POSITIVE)
    return cls(**kwargs)


def _checked(value: Any, hint: Any, path: str, *, positive: bool) -> Any:
    """``value`` as the declared type ``hint`` (JSON lists → tuples), or a UserError naming ``path``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _checked(value, next(a for a in args if a is not type(None)), path, positive=positive)
    if origin is tuple:
        fixed = not (len(args) == 2 and args[1] is Ellipsis)
        if not isinstance(value, (list, tuple)) or (fixed and len(value) != len(args)):
            size = f"{len(args)} values" if fixed else "a list"
            raise UserError(f"config field {path!r} must be {size}, got {value!r}")
        element_types = args if fixed else (args[0],) * len(value)
        return tuple(_checked(v, t, path, positive=positive) for v, t in zip(value, element_types))
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"config field {path!r} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"config field {path!r} must be a string, got {value!r}")
        return value
    if hint in (int, float):
        whole = hint is int
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            kind = "a whole number" if whole else "a number"
            raise UserError(f"config field {path!r} must be {kind}, got {value!r}")
        low = 1 if positive and whole else 0
        if not math.isfinite(value) or value < low or (positive and value == 0):
            raise UserError(f"config field {path!r} must be {'positive' if positive else 'at least 0'}, got {value!r}")
        return hint(value)
    return _tupleize(value)


def _tupleize(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupleize(v) for v in value)
    return value
