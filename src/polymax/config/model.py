"""Typed model configuration. Only the builder (``polymax.build``) and the CLI read these objects;
modules take explicit keyword arguments. ``ModelConfig.to_dict`` / ``from_dict`` round-trip through
``config.json`` of a saved model.
"""

from __future__ import annotations

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
    queries read from the stride-4 pixel features under the task's prompt, plus the task token; off in every
    preset). task_query_values: the values of that module's cross-attention — 'sine' (the reference's quirk:
    the sine positional encoding, image content only in the keys) or 'features' (the projected features)."""

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

    name: a key of ``polymax.tasks.TASKS`` — panoptic | semantic | instance | depth | normals.
    num_queries: 0 = the task reads the shared query group (``kmax_decoder.num_queries`` centres); N > 0 = the
        task owns a group of N cluster centres, with its own softmax and k-means argmax.
    aux_semantic: segmentation tasks: the training-only auxiliary semantic branch, 'decoder' (ASPP + low-level
        fusion, COCO/ADE), 'head' (head on stage5 only, Cityscapes) or 'none'.
    min_depth / max_depth: depth range in metres (bin centres are bounded to it).
    depth_loss: the depth recipe, 'silog' (SILog + relative squared + gradient, NYU) or 'charbonnier'
        (Taskonomy and the per-pixel baseline).
    depth_eval_crop: the depth evaluation crop, 'nyu' (Eigen's crop) or None.
    value_mlp_layers: depth of the per-cluster MLP for depth / normals.
    """

    name: str = "panoptic"
    num_queries: int = 0
    aux_semantic: str = "decoder"
    min_depth: float = 1e-3
    max_depth: float = 10.0
    depth_loss: str = "silog"
    depth_eval_crop: str | None = None
    value_mlp_layers: int = 2


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved as ``config.json`` next to the weights.

    architecture: 'kmax' (cluster prediction) or 'deeplabv3plus' (the per-pixel baseline).
    tasks: the task heads on the trunk, in order; one per task name.
    high_res_stride: stride of the final per-pixel embedding (4, or 2 for Cityscapes R50 / MaX-S).
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
    # Preprocessing: inputs are resized / padded to a 32k+1 size; `crop_size` is the training / eval
    # geometry (H, W) the preset was designed for.
    crop_size: tuple[int, int] = (1281, 1281)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks)

    def task(self, name: str | None = None) -> TaskConfig:
        """The config of task ``name``; without a name, the model's only task (a UserError when it has several)."""
        if name is None:
            if len(self.tasks) != 1:
                raise UserError(f"model {self.preset!r} has tasks {list(self.task_names)}; choose one with --task")
            return self.tasks[0]
        for task in self.tasks:
            if task.name == name:
                return task
        raise UserError(f"model {self.preset!r} has no task {name!r}; choose one of {list(self.task_names)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, migrate_config_dict(data))


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


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) frozen dataclass from plain JSON data; lists become tuples."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"config has unknown fields {unknown} for {cls.__name__}; "
                        "it was written by a newer or different version of polymax")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name) if _has_default(cls) else None
        if is_dataclass(default) and isinstance(value, dict):
            kwargs[name] = _from_dict(type(default), value)
        elif isinstance(default, tuple) and default and is_dataclass(default[0]) and isinstance(value, (list, tuple)):
            # a tuple of sections (ModelConfig.tasks): each element is rebuilt as the default's element type
            kwargs[name] = tuple(item if is_dataclass(item) else _from_dict(type(default[0]), item) for item in value)
        else:
            kwargs[name] = _tupleize(value)
    return cls(**kwargs)


def _has_default(cls: type) -> bool:
    try:
        cls()
        return True
    except TypeError:
        return False


def _tupleize(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupleize(v) for v in value)
    return value
