"""Official deeplab2 kMaX-DeepLab checkpoints → polymax models (spec §6).

``convert_deeplab2(source, preset)`` reads either a TensorFlow checkpoint prefix (needs the ``tf``
extra) or an ``.npz`` of arrays keyed by checkpoint variable names, maps every variable onto the model
built from ``preset``, and refuses with one message that names every missing, unused or mis-shaped
variable. The trunk (backbone + pixel decoder) is mapped by :mod:`polymax.convert.deeplab2_trunk`; this
file maps the kMaX decoder, the prediction heads and the training-only semantic branch.

Layouts: Conv1D kernels [1, in, out] → linear [out, in] (or a 1×1 conv [out, in, 1, 1]); Conv2D
[kh, kw, in, out] → [out, in, kh, kw]; depthwise [k, k, C, 1] → [C, 1, k, k]; multi-axis BN
parameters ([1, 8, 1, 32]) are flattened. Class channels are re-ordered from deeplab2's
[things…, stuff…, void] to ours [classes 0..C−1, void] (see :func:`class_channel_order`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from polymax.errors import UserError

_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# Training state that is not part of the model.
_SKIP_PREFIXES = ("optimizer/", "backbone_optimizer/", "global_step", "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH")
_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}

Transform = Callable[[np.ndarray], np.ndarray]


def _linear(a: np.ndarray) -> np.ndarray:        # Conv1D [1, in, out] → Linear [out, in]
    return a.reshape(a.shape[-2], a.shape[-1]).T


def _conv1d_as_conv2d(a: np.ndarray) -> np.ndarray:   # Conv1D [1, in, out] → 1×1 Conv2d [out, in, 1, 1]
    return _linear(a)[:, :, None, None]


def _conv2d(a: np.ndarray) -> np.ndarray:        # [kh, kw, in, out] → [out, in, kh, kw]
    return a.transpose(3, 2, 0, 1)


def _depthwise(a: np.ndarray) -> np.ndarray:     # [k, k, C, 1] → [C, 1, k, k]
    return a.transpose(2, 3, 0, 1)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


class _Mapping:
    """Collects torch key → (TF name, transform) pairs."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, Transform]] = {}

    def add(self, key: str, name: str, transform: Transform = _flat) -> None:
        self.entries[key] = (name, transform)

    def bn(self, key: str, name: str) -> None:
        for ours, theirs in _BN.items():
            self.add(f"{key}.{ours}", f"{name}/{theirs}")

    def linear_bn(self, key: str, name: str) -> None:     # LinearBN ← Conv1D + BN
        self.add(f"{key}.linear.weight", f"{name}/_conv/kernel", _linear)
        self.bn(f"{key}.bn", f"{name}/_batch_norm")

    def conv_bn(self, key: str, name: str, transform: Transform = _conv2d) -> None:   # ConvBN ← Conv2D + BN
        self.add(f"{key}.conv.weight", f"{name}/_conv/kernel", transform)
        self.bn(f"{key}.bn", f"{name}/_batch_norm")

    def separable(self, key: str, name: str) -> None:     # DepthwiseSeparableConv
        self.add(f"{key}.depthwise.conv.weight", f"{name}/_depthwise/_depthwise_conv/depthwise_kernel", _depthwise)
        self.bn(f"{key}.depthwise.bn", f"{name}/_depthwise/_batch_norm")
        self.conv_bn(f"{key}.pointwise", f"{name}/_pointwise")

    def mask_head(self, key: str, prefix: str) -> None:
        """``prefix`` is '' for the final head, '.../_auxiliary_clustering_predictor/_' for an auxiliary one."""
        self.separable(f"{key}.pixel_head.conv", f"{prefix}pixel_space_head/conv_block/_conv1_bn_act")
        self.add(f"{key}.pixel_head.project.weight", f"{prefix}pixel_space_head/final_conv/kernel", _conv2d)
        self.add(f"{key}.pixel_head.project.bias", f"{prefix}pixel_space_head/final_conv/bias")
        self.bn(f"{key}.pixel_head.norm", f"{prefix}pixel_space_feature_batch_norm")
        self.linear_bn(f"{key}.mask_kernel", f"{prefix}transformer_mask_head")
        self.bn(f"{key}.logit_norm", f"{prefix}pixel_space_mask_batch_norm")


def _aux_prefix(index: int) -> str:
    return f"transformer_decoder/_kmax_decoder/{index}/_block1_transformer/_auxiliary_clustering_predictor/_"


def head_mapping(model: nn.Module, class_order: list[int] | None = None) -> dict[str, tuple[str, Transform]]:
    """torch key → (TF name, transform) for kmax_decoder, mask_head, the panoptic head and semantic_branch.

    class_order: for each of our class-logit channels, the official channel it comes from (None = same).
    """
    m = _Mapping()
    td = "transformer_decoder"
    m.add("kmax_decoder.cluster_centres", f"{td}/cluster_centers", lambda a: a.reshape(a.shape[-2], a.shape[-1]))
    m.linear_bn("kmax_decoder.class_projection", f"{td}/_class_embedding_projection")
    m.linear_bn("kmax_decoder.mask_projection", f"{td}/_mask_embedding_projection")
    num_layers = len(model.kmax_decoder.layers)
    for i in range(num_layers):
        key, name = f"kmax_decoder.layers.{i}", f"{td}/_kmax_decoder/{i}/_block1_transformer"
        m.linear_bn(f"{key}.memory_in", f"{name}/_memory_conv1_bn_act")
        m.conv_bn(f"{key}.pixel_in", f"{name}/_pixel_conv1_bn_act", _conv1d_as_conv2d)
        m.conv_bn(f"{key}.pixel_value", f"{name}/_pixel_v_conv_bn", _conv1d_as_conv2d)
        m.linear_bn(f"{key}.memory_qkv", f"{name}/_memory_qkv_conv_bn")
        m.bn(f"{key}.attention.similarity_norm", f"{name}/_memory_attention/_batch_norm_similarity")
        m.bn(f"{key}.attention.value_norm", f"{name}/_memory_attention/_batch_norm_retrieved_value")
        m.linear_bn(f"{key}.attention_out", f"{name}/_memory_conv3_bn")
        m.bn(f"{key}.kmeans_norm", f"{name}/_kmeans_memory_batch_norm_retrieved_value")
        m.linear_bn(f"{key}.kmeans_out", f"{name}/_kmeans_memory_conv3_bn")
        m.linear_bn(f"{key}.ffn_in", f"{name}/_memory_ffn_conv1_bn_act")
        m.linear_bn(f"{key}.ffn_out", f"{name}/_memory_ffn_conv2_bn")
        m.mask_head(f"{key}.aux_head", _aux_prefix(i))
    m.mask_head("mask_head", "")

    def reorder(transform: Transform) -> Transform:
        if class_order is None:
            return transform
        return lambda a: transform(a)[class_order]

    for i in range(num_layers + 1):
        name = f"{_aux_prefix(i)}transformer_class_head" if i < num_layers else "transformer_class_head"
        m.add(f"heads.panoptic.classifiers.{i}.weight", f"{name}/_conv/kernel", reorder(_linear))
        m.add(f"heads.panoptic.classifiers.{i}.bias", f"{name}/_conv/bias", reorder(_flat))
    branch = getattr(model, "semantic_branch", None)
    if branch is not None:
        _semantic_mapping(m, branch)
    return m.entries


def _semantic_mapping(m: _Mapping, branch: nn.Module) -> None:
    key = "semantic_branch"
    if hasattr(branch, "aspp"):
        name = "semantic_decoder"
        m.conv_bn(f"{key}.aspp.conv1x1", f"{name}/_aspp/_conv_bn_act")
        for j in range(len(branch.aspp.atrous)):
            m.conv_bn(f"{key}.aspp.atrous.{j}", f"{name}/_aspp/_aspp_conv{j + 1}/_conv_bn_act")
        m.conv_bn(f"{key}.aspp.pool", f"{name}/_aspp/_aspp_pool/_conv_bn_act")
        m.conv_bn(f"{key}.aspp.project", f"{name}/_aspp/_proj_conv_bn_act")
        for j in range(len(branch.low_level)):
            m.conv_bn(f"{key}.low_level.{j}", f"{name}/_low_level_conv{j + 1}")
            m.separable(f"{key}.fusion.{j}", f"{name}/_fusion_conv{j + 1}/_conv1_bn_act")
    m.separable(f"{key}.head.conv", "semantic_head_without_last_layer/_conv1_bn_act")
    num_logits = branch.head.classifier.out_channels
    m.add(f"{key}.head.classifier.weight", "semantic_last_layer/kernel", _semantic_channels(_conv2d, num_logits))
    m.add(f"{key}.head.classifier.bias", "semantic_last_layer/bias", _semantic_channels(_flat, num_logits, void=-1e4))


def _semantic_channels(transform: Transform, num_logits: int, void: float = 0.0) -> Transform:
    """deeplab2's semantic logits are in data-set id order. With C + 1 channels the void class is id 0
    (COCO, ADE20K): move it last. With C channels (Cityscapes, no void channel) add a void channel whose
    logit is −1e4 (bias) — it never wins the softmax, so the C-way softmax of the original is unchanged."""

    def apply(a: np.ndarray) -> np.ndarray:
        x = transform(a)
        if x.shape[0] == num_logits:
            return np.concatenate([x[1:], x[:1]])
        if x.shape[0] == num_logits - 1:
            return np.concatenate([x, np.full_like(x[:1], void)])
        return x    # shape error is reported by the caller
    return apply


def class_channel_order(num_classes: int, thing_classes: tuple[int, ...]) -> list[int]:
    """For each of our class-logit channels (classes 0..C−1, void), the deeplab2 channel it comes from.

    deeplab2 orders channels as [thing ids ascending, stuff ids ascending, void]; its data-set ids follow
    our class order (COCO / ADE20K shift by one for their void id 0, which keeps the order).
    """
    things = sorted(thing_classes)
    stuff = [c for c in range(num_classes) if c not in set(things)]
    official = things + stuff
    position = {cls: channel for channel, cls in enumerate(official)}
    return [position[c] for c in range(num_classes)] + [num_classes]


# Layouts named by polymax.convert.deeplab2_trunk.trunk_entries.
_TRUNK_LAYOUTS: dict[str, Transform] = {
    "conv": _conv2d,
    "dense": lambda a: a.T,
    "qkv": lambda a: a.T[:, :, None],
    "flat": _flat,
    "same": lambda a: a,
}


def clean_name(name: str) -> str | None:
    """Checkpoint key → variable name, or None for training state (optimizer slots, step counters)."""
    name = name.removesuffix(_SUFFIX)
    if name.startswith(_SKIP_PREFIXES) or ".OPTIMIZER_SLOT" in name:
        return None
    return name


def read_variables(source: str | Path) -> dict[str, np.ndarray]:
    """Variables of an ``.npz`` (keyed by checkpoint names) or a TensorFlow checkpoint prefix."""
    path = Path(source)
    if path.suffix != ".npz" and (Path(f"{path}.index").is_file() or path.is_dir()):
        return _read_tf_checkpoint(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass an .npz of checkpoint variables or a TensorFlow checkpoint "
                        "prefix (e.g. ckpt-150000, next to ckpt-150000.index)")
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"{path} is not a readable .npz file ({error}); it may be truncated or corrupt") from error
    return {clean: value for key, value in raw.items() if (clean := clean_name(key)) is not None}


def _read_tf_checkpoint(path: Path) -> dict[str, np.ndarray]:
    try:
        import tensorflow as tf
    except ImportError as error:
        raise UserError(f"reading the TensorFlow checkpoint {path} needs TensorFlow: pip install 'polymax[tf]', "
                        "or pass an .npz of its variables instead") from error
    prefix = tf.train.latest_checkpoint(str(path)) if path.is_dir() else str(path)
    if prefix is None:
        raise UserError(f"no TensorFlow checkpoint found in the folder {path}")
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = reader.get_variable_to_shape_map()
        return {clean: reader.get_tensor(name) for name in names if (clean := clean_name(name)) is not None}
    except (tf.errors.OpError, ValueError) as error:
        raise UserError(f"cannot read the TensorFlow checkpoint {prefix}: {error}".splitlines()[0]) from error


def state_dict_from_variables(model: nn.Module, variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map every checkpoint variable onto ``model`` (a KMaX); UserError naming every problem at once."""
    from polymax.convert.deeplab2_trunk import trunk_entries

    info = model.config.dataset
    entries = {key: (name, _TRUNK_LAYOUTS[layout]) for name, key, layout in
               trunk_entries(backbone=model.backbone, pixel_decoder=model.pixel_decoder)}
    entries.update(head_mapping(model, class_channel_order(info.num_classes, info.thing_classes)))
    targets = model.state_dict()
    uncovered = [k for k in targets if k not in entries and not k.endswith("num_batches_tracked")]
    if uncovered:   # a bug in the mapping, not in the user's file
        raise RuntimeError(f"no deeplab2 variable is mapped to {uncovered}")
    state, missing, misshaped = {}, [], []
    for key, (name, transform) in entries.items():
        if name not in variables:
            missing.append(name)
            continue
        array = np.asarray(variables[name])
        try:
            converted = transform(array)
        except (ValueError, IndexError):      # e.g. a kernel of the wrong rank, too few class channels
            converted = array
        if tuple(converted.shape) != tuple(targets[key].shape):
            misshaped.append(f"{name} {list(array.shape)} (does not fit {key} {list(targets[key].shape)})")
            continue
        state[key] = torch.from_numpy(np.ascontiguousarray(converted)).to(targets[key].dtype)
    used = {name for name, _ in entries.values()}
    ignored = ("semantic_decoder/", "semantic_head_without_last_layer/", "semantic_last_layer/")
    unused = sorted(n for n in variables if n not in used
                    and not (model.semantic_branch is None and n.startswith(ignored)))
    problems = [f"{len(items)} {label}: {', '.join(items)}" for label, items in
                (("missing", sorted(set(missing))), ("unused", unused), ("mis-shaped", sorted(misshaped))) if items]
    if problems:
        raise UserError(f"the checkpoint does not match preset {model.config.preset!r} "
                        f"({'; '.join(problems)})")
    return state


def convert_deeplab2(source: str | Path, preset: str) -> nn.Module:
    """An official deeplab2 kMaX-DeepLab checkpoint (TF prefix or .npz) → the preset's model, in eval mode."""
    from polymax.build import build_model

    model = build_model(preset)            # unknown preset → UserError before reading a large file
    variables = read_variables(source)
    if not variables:
        raise UserError(f"{source} holds no model variables")
    state = state_dict_from_variables(model, variables)
    model.load_state_dict(state, strict=False)   # num_batches_tracked keeps its initial value
    return model.eval()
