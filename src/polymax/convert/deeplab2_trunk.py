"""Official deeplab2 checkpoint variables of ``encoder/…`` and ``pixel_decoder/…`` → our trunk's weights.

The mapping is written out by walking our modules: each builder below yields (tf_name, torch_key, layout)
triples for one kind of module, named after deeplab2's attribute paths (spec §6). Layouts:

    conv        Conv2D kernel [kh, kw, in, out]               → [out, in, kh, kw]   permute(3, 2, 0, 1)
                (also ConvNeXt's grouped depthwise [7, 7, 1, C] → [C, 1, 7, 7])
    dense       Dense kernel [in, out]                         → [out, in]
    qkv         axial ``qkv_kernel`` [in, out]                 → Conv1d [out, in, 1]
    flat        BN / LN vectors, multi-axis BN params [3,1,8,1,1] / [2,1,8,1,d], layer_scale [1,1,1,C]
                                                               → reshape(-1)
    same        RPE tables [509, d], used as they are
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from polymax.errors import UserError
from polymax.model.backbones.axial_resnet import AxialResNet
from polymax.model.backbones.convnext import ConvNeXt
from polymax.model.backbones.resnet import ResNet
from polymax.model.layers.blocks import AxialBlock, BottleneckBlock, ResidualStage
from polymax.model.pixel_decoder import KMaXPixelDecoder

Entry = tuple[str, str, str]          # (tf_name, torch_key, layout)

_LAYOUTS = {
    "conv": lambda a: a.transpose(3, 2, 0, 1),
    "dense": lambda a: a.T,
    "qkv": lambda a: a.T[:, :, None],
    "flat": lambda a: a.reshape(-1),
    "same": lambda a: a,
}

_BN = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var"))
_LN = (("gamma", "weight"), ("beta", "bias"))


def _batch_norm(tf: str, torch_key: str) -> Iterator[Entry]:
    for tf_leaf, torch_leaf in _BN:
        yield f"{tf}/{tf_leaf}", f"{torch_key}.{torch_leaf}", "flat"


def _layer_norm(tf: str, torch_key: str) -> Iterator[Entry]:
    for tf_leaf, torch_leaf in _LN:
        yield f"{tf}/{tf_leaf}", f"{torch_key}.{torch_leaf}", "flat"


def _conv_bn(tf: str, torch_key: str) -> Iterator[Entry]:
    """deeplab2 Conv2DSame with BN ↔ our ConvBN."""
    yield f"{tf}/_conv/kernel", f"{torch_key}.conv.weight", "conv"
    yield from _batch_norm(f"{tf}/_batch_norm", f"{torch_key}.bn")


def _axial_attention_1d(tf: str, torch_key: str) -> Iterator[Entry]:
    yield f"{tf}/qkv_kernel", f"{torch_key}.qkv.weight", "qkv"
    yield from _batch_norm(f"{tf}/_batch_norm_qkv", f"{torch_key}.bn_qkv")
    yield from _batch_norm(f"{tf}/_batch_norm_similarity", f"{torch_key}.bn_similarity")
    yield from _batch_norm(f"{tf}/_batch_norm_retrieved_output", f"{torch_key}.bn_retrieved")
    for table in ("query", "key", "value"):
        yield f"{tf}/_{table}_rpe/embeddings", f"{torch_key}.{table}_rpe", "same"


def _residual_block(block: nn.Module, tf: str, torch_key: str) -> Iterator[Entry]:
    yield from _conv_bn(f"{tf}/_conv1_bn_act", f"{torch_key}.conv1")
    if isinstance(block, BottleneckBlock):
        yield from _conv_bn(f"{tf}/_conv2_bn_act", f"{torch_key}.conv2")
    elif isinstance(block, AxialBlock):
        for axis in ("height", "width"):
            yield from _axial_attention_1d(f"{tf}/_attention/_{axis}_axis", f"{torch_key}.attention.{axis}_axis")
    else:
        raise TypeError(f"no deeplab2 mapping for block {type(block).__name__}")
    yield from _conv_bn(f"{tf}/_conv3_bn", f"{torch_key}.conv3")
    if block.shortcut is not None:
        yield from _conv_bn(f"{tf}/_shortcut", f"{torch_key}.shortcut")


def _residual_stage(stage: ResidualStage, tf: str, torch_key: str) -> Iterator[Entry]:
    for index, block in enumerate(stage.blocks):
        yield from _residual_block(block, f"{tf}/_block{index + 1}", f"{torch_key}.blocks.{index}")


def _resnet_entries(backbone: ResNet | AxialResNet, tf: str, torch_key: str) -> Iterator[Entry]:
    if isinstance(backbone, ResNet):
        yield from _conv_bn(f"{tf}/_stem", f"{torch_key}.stem")
    else:
        for conv in ("conv1_bn_act", "conv2_bn_act", "conv3_bn"):
            yield from _conv_bn(f"{tf}/_stem/_{conv}", f"{torch_key}.stem.{conv.split('_')[0]}")
    for number in (2, 3, 4, 5):
        yield from _residual_stage(getattr(backbone, f"stage{number}"), f"{tf}/_stage{number}",
                                   f"{torch_key}.stage{number}")


def _convnext_entries(backbone: ConvNeXt, tf: str, torch_key: str) -> Iterator[Entry]:
    # Keras Sequentials number only their layers with weights (the ZeroPadding2D layers are skipped).
    stem = f"{tf}/downsample_layers/0"
    yield f"{stem}/layer_with_weights-0/kernel", f"{torch_key}.downsample_layers.0.0.weight", "conv"
    yield f"{stem}/layer_with_weights-0/bias", f"{torch_key}.downsample_layers.0.0.bias", "flat"
    yield from _layer_norm(f"{stem}/layer_with_weights-1", f"{torch_key}.downsample_layers.0.1.norm")
    for i in (1, 2, 3):
        down, key = f"{tf}/downsample_layers/{i}", f"{torch_key}.downsample_layers.{i}"
        yield from _layer_norm(f"{down}/layer_with_weights-0", f"{key}.0.norm")
        yield f"{down}/layer_with_weights-1/kernel", f"{key}.1.weight", "conv"
        yield f"{down}/layer_with_weights-1/bias", f"{key}.1.bias", "flat"
    for i, stage in enumerate(backbone.stages):
        for j in range(len(stage)):
            block, key = f"{tf}/stages/{i}/layer_with_weights-{j}", f"{torch_key}.stages.{i}.{j}"
            yield f"{block}/depthwise_conv/kernel", f"{key}.dwconv.weight", "conv"
            yield f"{block}/depthwise_conv/bias", f"{key}.dwconv.bias", "flat"
            yield from _layer_norm(f"{block}/norm", f"{key}.norm")
            for number in (1, 2):
                yield f"{block}/pointwise_conv{number}/kernel", f"{key}.pwconv{number}.weight", "dense"
                yield f"{block}/pointwise_conv{number}/bias", f"{key}.pwconv{number}.bias", "flat"
            yield f"{block}/layer_scale", f"{key}.gamma", "flat"


def _pixel_decoder_entries(decoder: KMaXPixelDecoder, tf: str, torch_key: str) -> Iterator[Entry]:
    for i in range(decoder.num_stages):
        yield from _layer_norm(f"{tf}/_backbone_norms/{i}", f"{torch_key}.backbone_norms.{i}.norm")
        yield from _residual_stage(decoder.stages[i], f"{tf}/_stages/{i}", f"{torch_key}.stages.{i}")
    # ResizedFuse numbers its inputs: 1 = the decoder map, 2 = the backbone skip. An input that already has
    # the target channel count has no projection (and no variables).
    for i, fuse in enumerate(decoder.fuses):
        tf_fuse, key = f"{tf}/_skip_connections/{i}", f"{torch_key}.fuses.{i}"
        if fuse.project_decoder is not None:
            yield from _conv_bn(f"{tf_fuse}/_resized_conv_bn1", f"{key}.project_decoder")
        if fuse.project_skip is not None:
            yield from _conv_bn(f"{tf_fuse}/_resized_conv_bn2", f"{key}.project_skip")


def trunk_entries(*, backbone: nn.Module, pixel_decoder: nn.Module) -> list[Entry]:
    """Every (tf_name, torch_key, layout) of the trunk, torch keys prefixed ``backbone.`` / ``pixel_decoder.``."""
    if isinstance(backbone, (ResNet, AxialResNet)):
        entries = list(_resnet_entries(backbone, "encoder", "backbone"))
    elif isinstance(backbone, ConvNeXt):
        entries = list(_convnext_entries(backbone, "encoder", "backbone"))
    else:
        raise TypeError(f"no deeplab2 mapping for backbone {type(backbone).__name__}")
    if not isinstance(pixel_decoder, KMaXPixelDecoder):
        raise TypeError(f"no deeplab2 mapping for pixel decoder {type(pixel_decoder).__name__}")
    entries += _pixel_decoder_entries(pixel_decoder, "pixel_decoder", "pixel_decoder")
    return entries


def convert_trunk(variables: Mapping[str, np.ndarray], *, backbone: nn.Module,
                  pixel_decoder: nn.Module) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Map the checkpoint's trunk variables onto backbone / pixel_decoder.

    variables: checkpoint name (without ``/.ATTRIBUTES/VARIABLE_VALUE``) → array in TF layout.
    Returns (state-dict entries keyed ``backbone.<key>`` / ``pixel_decoder.<key>``, consumed TF names).
    Raises UserError if a needed variable is absent or has a shape that does not fit our module.
    """
    targets = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    targets.update({f"pixel_decoder.{k}": v for k, v in pixel_decoder.state_dict().items()})
    state: dict[str, torch.Tensor] = {}
    consumed: set[str] = set()
    missing, misshaped = [], []
    for tf_name, torch_key, layout in trunk_entries(backbone=backbone, pixel_decoder=pixel_decoder):
        if tf_name not in variables:
            missing.append(tf_name)
            continue
        array = _LAYOUTS[layout](np.asarray(variables[tf_name]))
        target = targets[torch_key]
        if tuple(array.shape) != tuple(target.shape):
            misshaped.append(f"{tf_name} {tuple(np.shape(variables[tf_name]))} → {torch_key} "
                             f"{tuple(target.shape)}")
            continue
        state[torch_key] = torch.from_numpy(np.ascontiguousarray(array)).to(target.dtype)
        consumed.add(tf_name)
    if missing:
        raise UserError(f"checkpoint lacks {len(missing)} trunk variables (e.g. {missing[0]}); "
                        "is it a kMaX-DeepLab checkpoint of this preset's backbone?")
    if misshaped:
        raise UserError(f"{len(misshaped)} checkpoint variables do not fit the model (e.g. {misshaped[0]}); "
                        "pick the preset that matches the checkpoint")
    return state, consumed
