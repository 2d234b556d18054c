"""Backbones: endpoint contract (channels, strides, sizes), gradients, drop-path schedules, parameter counts,
the axial-attention maths, and ImageNet ConvNeXt weight loading."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from polymax.errors import UserError
from polymax.model.backbones import (
    AxialResNet,
    ConvNeXt,
    ResNet,
    axial_resnet50,
    convnext_base,
    convnext_large,
    convnext_small,
    convnext_tiny,
    load_imagenet_weights,
    resnet50,
    resnet_tiny,
)
from polymax.model.layers.axial_attention import AxialAttention, AxialAttention2D, relative_index
from polymax.model.layers.blocks import AxialBlock, BottleneckBlock
from polymax.structures import Features

TINY_BACKBONES = {
    "resnet_tiny": lambda keep=1.0: resnet_tiny(width=16, drop_path_keep=keep),
    "axial_resnet_tiny": lambda keep=1.0: AxialResNet(depths=(1, 1, 2, 1), width=16, drop_path_keep=keep),
    "convnext_tiny_dims": lambda keep=1.0: ConvNeXt(depths=(1, 1, 2, 1), dims=(8, 16, 32, 64), drop_path_keep=keep),
}


def _endpoints(features: Features) -> list[torch.Tensor]:
    return [features.stage1, features.stage2, features.stage3, features.stage4, features.stage5]


def _check_contract(backbone: nn.Module, height: int, width: int, batch: int = 1) -> None:
    x = torch.rand(batch, 3, height, width) * 2 - 1
    features = backbone(x)
    assert isinstance(features, Features)
    for tensor, channels, stride in zip(_endpoints(features), backbone.channels, backbone.strides):
        # Every backbone maps a side n to ceil(n / s) at stride s ((n - 1) / s + 1 for n = 32k + 1).
        assert tuple(tensor.shape) == (batch, channels, math.ceil(height / stride), math.ceil(width / stride))
        assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("name", sorted(TINY_BACKBONES))
@pytest.mark.parametrize("size", [(65, 65), (64, 80)])
def test_tiny_backbone_endpoints(name: str, size: tuple[int, int]) -> None:
    backbone = TINY_BACKBONES[name]().eval()
    with torch.no_grad():
        _check_contract(backbone, *size)


def _randomise_batch_norms(module: nn.Module) -> None:
    # The last BN of every residual branch starts at γ = 0, which would zero the gradients upstream of it.
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(bn.weight, 0.5, 1.5)


@pytest.mark.parametrize("name", sorted(TINY_BACKBONES))
def test_tiny_backbone_every_parameter_gets_a_gradient(name: str) -> None:
    backbone = TINY_BACKBONES[name]().train()
    _randomise_batch_norms(backbone)
    features = backbone(torch.rand(2, 3, 65, 65) * 2 - 1)
    loss = sum((t * torch.randn_like(t)).sum() for t in _endpoints(features))
    loss.backward()
    for key, parameter in backbone.named_parameters():
        assert parameter.grad is not None, key
        assert parameter.grad.abs().sum() > 0, key


def test_drop_path_is_active_only_in_training() -> None:
    backbone = TINY_BACKBONES["convnext_tiny_dims"](keep=0.5)
    x = torch.rand(4, 3, 33, 33)
    backbone.eval()
    with torch.no_grad():
        assert torch.equal(backbone(x).stage5, backbone(x).stage5)
        backbone.train()
        torch.manual_seed(1)
        first = backbone(x).stage5
        torch.manual_seed(2)
        assert not torch.allclose(first, backbone(x).stage5)


def _block_keeps(stage: nn.Module) -> list[float]:
    return [block.drop_path.keep_prob for block in stage.blocks]


def test_resnet_drop_path_schedule_only_beyond_stride_16() -> None:
    with torch.device("meta"):
        backbone = ResNet(depths=(3, 4, 6, 3), width=64, drop_path_keep=0.6)
    assert _block_keeps(backbone.stage2) == [1.0] * 3
    assert _block_keeps(backbone.stage3) == [1.0] * 4
    # stage = log2(current stride) - 1; keep = 1 - (1 - p) * stage / 4.
    assert _block_keeps(backbone.stage4) == pytest.approx([1.0] + [0.7] * 5)
    assert _block_keeps(backbone.stage5) == pytest.approx([0.7, 0.6, 0.6])


def test_convnext_drop_path_schedule_is_linear_over_all_blocks() -> None:
    with torch.device("meta"):
        backbone = convnext_tiny(drop_path_keep=0.7)
    keeps = [block.drop_path.keep_prob for stage in backbone.stages for block in stage]
    assert len(keeps) == 18
    assert keeps == pytest.approx([1.0 - 0.3 * k / 17 for k in range(18)])


def test_max_s_uses_axial_blocks_where_the_input_stride_is_at_least_16() -> None:
    with torch.device("meta"):
        backbone = axial_resnet50(drop_path_keep=0.8)
    kinds = {n: [type(b) for b in getattr(backbone, f"stage{n}").blocks] for n in (2, 3, 4, 5)}
    assert kinds[2] == [BottleneckBlock] * 3 and kinds[3] == [BottleneckBlock] * 4
    assert kinds[4] == [BottleneckBlock] + [AxialBlock] * 5
    assert kinds[5] == [AxialBlock] * 3
    first = backbone.stage5.blocks[0]
    assert first.stride == 2 and first.attention.stride == 2
    assert tuple(first.attention.height_axis.qkv.weight.shape) == (2048, 1024, 1)   # TF qkv_kernel [1024, 2048]
    assert _block_keeps(backbone.stage5) == pytest.approx([0.85, 0.8, 0.8])


# Spec §7: trainable parameters (BN moving statistics are buffers here, so they do not count).
ENCODER_PARAMS = {
    resnet50: 23.51, axial_resnet50: 41.34, convnext_tiny: 27.82, convnext_small: 49.45,
    convnext_base: 87.56, convnext_large: 196.23,
}


@pytest.mark.parametrize("factory", list(ENCODER_PARAMS), ids=lambda f: f.__name__)
def test_encoder_parameter_counts(factory) -> None:
    with torch.device("meta"):           # counts without allocating 200M parameters
        backbone = factory()
    count = sum(p.numel() for p in backbone.parameters())
    assert round(count / 1e6, 2) == ENCODER_PARAMS[factory]


def _quick_build(factory) -> nn.Module:
    """Build on the meta device, then fill with cheap random values: the shape checks do not need the real
    (slow on 2 cores) initialisation of ~100M parameters."""
    with torch.device("meta"):
        model = factory()
    model.to_empty(device="cpu")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(std=0.02)
        for name, buffer in model.named_buffers():
            buffer.fill_(1 if name.endswith("running_var") else 0)
    return model.eval()


@pytest.fixture(scope="module")
def full_size_backbones() -> dict[str, nn.Module]:
    return {"resnet50": _quick_build(resnet50), "axial_resnet50": _quick_build(axial_resnet50),
            "convnext_tiny": _quick_build(convnext_tiny)}


@pytest.mark.parametrize("name", ["resnet50", "axial_resnet50", "convnext_tiny"])
def test_full_size_backbone_endpoints(full_size_backbones, name: str) -> None:
    backbone = full_size_backbones[name]
    expected = {"resnet50": (64, 256, 512, 1024, 2048), "axial_resnet50": (128, 256, 512, 1024, 2048),
                "convnext_tiny": (96, 96, 192, 384, 768)}[name]
    assert backbone.channels == expected
    with torch.no_grad():
        _check_contract(backbone, 65, 65)
        _check_contract(backbone, 64, 80)


@pytest.mark.slow
@pytest.mark.parametrize("factory", [convnext_small, convnext_base, convnext_large], ids=lambda f: f.__name__)
def test_large_convnext_endpoints(factory) -> None:
    with torch.no_grad():
        _check_contract(_quick_build(factory), 65, 65)


# ---------------------------------------------------------------------------------------------------------
# Axial attention against a literal, loop-by-loop reading of deeplab2's formulas.

def test_relative_index_is_key_minus_query_plus_254() -> None:
    assert relative_index(3).tolist() == [[254, 255, 256], [253, 254, 255], [252, 253, 254]]
    assert relative_index(300)[0, -1] == 508 and relative_index(300)[-1, 0] == 0   # clamped beyond ±254


def _eval_bn(x: torch.Tensor, bn: nn.BatchNorm1d, channel: int) -> torch.Tensor:
    scale = bn.weight[channel] / torch.sqrt(bn.running_var[channel] + bn.eps)
    return (x - bn.running_mean[channel]) * scale + bn.bias[channel]


def _reference_axial_attention(att: AxialAttention, x: torch.Tensor) -> torch.Tensor:
    heads, depth_k, depth_v = att.num_heads, att.key_depth, att.value_depth
    dk, dv = depth_k // heads, depth_v // heads
    qkv = torch.einsum("oc,ncl->nol", att.qkv.weight[:, :, 0], x)
    qkv = torch.stack([_eval_bn(qkv[:, c], att.bn_qkv, c) for c in range(qkv.shape[1])], dim=1)
    length = x.shape[-1]
    outputs = []
    for h in range(heads):
        q = qkv[:, h * dk:(h + 1) * dk]
        k = qkv[:, depth_k + h * dk:depth_k + (h + 1) * dk]
        v = qkv[:, 2 * depth_k + h * dv:2 * depth_k + (h + 1) * dv]
        logits = torch.zeros(x.shape[0], length, length)
        for query in range(length):
            for m in range(length):
                row = m - query + 254
                terms = [(q[:, :, query] * k[:, :, m]).sum(1), (q[:, :, query] * att.query_rpe[row]).sum(1),
                         (k[:, :, m] * att.key_rpe[row]).sum(1)]
                logits[:, query, m] = sum(_eval_bn(t, att.bn_similarity, i * heads + h) for i, t in enumerate(terms))
        weights = logits.softmax(-1)
        head_out = torch.zeros(x.shape[0], dv, length)
        for query in range(length):
            content = sum(weights[:, query, m, None] * v[:, :, m] for m in range(length))
            rpe = sum(weights[:, query, m, None] * att.value_rpe[m - query + 254] for m in range(length))
            for c in range(dv):
                head_out[:, c, query] = (_eval_bn(content[:, c], att.bn_retrieved, h * dv + c)
                                     + _eval_bn(rpe[:, c], att.bn_retrieved, depth_v + h * dv + c))
        outputs.append(head_out)
    return torch.cat(outputs, dim=1)


def _randomise_eval_statistics(module: nn.Module) -> None:
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(bn.weight, 0.5, 1.5)
            nn.init.normal_(bn.bias, std=0.1)
            bn.running_mean.normal_(std=0.1)
            bn.running_var.uniform_(0.5, 1.5)


def test_axial_attention_matches_the_literal_formula() -> None:
    att = AxialAttention(6, key_depth=4, value_depth=8, num_heads=2).eval()
    _randomise_eval_statistics(att)
    x = torch.randn(3, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(att(x), _reference_axial_attention(att, x), rtol=1e-5, atol=1e-5)


def test_axial_attention_2d_runs_height_then_width_and_strides() -> None:
    att = AxialAttention2D(6, key_depth=4, value_depth=8, num_heads=2, stride=2).eval()
    _randomise_eval_statistics(att)
    x = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        out = att(x)
        # Height pass on every column (B·W sequences of length H), then rows [::2].
        columns = att.height_axis(x.permute(0, 3, 1, 2).reshape(14, 6, 5)).view(2, 7, 8, 5).permute(0, 2, 3, 1)
        rows = columns[:, :, ::2].permute(0, 2, 1, 3).reshape(6, 8, 7)
        expected = att.width_axis(rows).view(2, 3, 8, 7).permute(0, 2, 1, 3)[:, :, :, ::2]
    assert out.shape == (2, 8, 3, 4)
    torch.testing.assert_close(out, expected)


# ---------------------------------------------------------------------------------------------------------
# ImageNet ConvNeXt weights.

def _tiny_convnext() -> ConvNeXt:
    return ConvNeXt(depths=(1, 1, 2, 1), dims=(8, 16, 32, 64))


def _official_layout(model: ConvNeXt) -> dict[str, torch.Tensor]:
    """Our state dict written in facebookresearch/ConvNeXt key layout, with its classifier and final norm."""
    state = {key.replace(".norm.", "."): torch.randn_like(value) for key, value in model.state_dict().items()
             if key.startswith("downsample_layers")}
    state.update({k: torch.randn_like(v) for k, v in model.state_dict().items() if k.startswith("stages")})
    state.update({"norm.weight": torch.ones(64), "norm.bias": torch.zeros(64), "head.weight": torch.randn(10, 64),
                  "head.bias": torch.zeros(10)})
    return state


def test_load_imagenet_weights_official_layout(tmp_path) -> None:
    model = _tiny_convnext()
    source = _official_layout(model)
    path = tmp_path / "convnext.pth"
    torch.save({"model": source}, path)
    load_imagenet_weights(model, path)
    loaded = model.state_dict()
    assert torch.equal(loaded["downsample_layers.0.1.norm.weight"], source["downsample_layers.0.1.weight"])
    assert torch.equal(loaded["downsample_layers.2.0.norm.bias"], source["downsample_layers.2.0.bias"])
    assert torch.equal(loaded["downsample_layers.2.1.weight"], source["downsample_layers.2.1.weight"])
    assert torch.equal(loaded["stages.2.1.pwconv1.weight"], source["stages.2.1.pwconv1.weight"])
    assert torch.equal(loaded["stages.3.0.gamma"], source["stages.3.0.gamma"])


def test_load_imagenet_weights_timm_layout_safetensors(tmp_path) -> None:
    from safetensors.torch import save_file

    model = _tiny_convnext()
    ours = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    timm = {"stem.0.weight": ours["downsample_layers.0.0.weight"], "stem.0.bias": ours["downsample_layers.0.0.bias"],
            "stem.1.weight": ours["downsample_layers.0.1.norm.weight"],
            "stem.1.bias": ours["downsample_layers.0.1.norm.bias"], "head.fc.weight": torch.randn(10, 64)}
    for i in (1, 2, 3):
        for leaf in ("weight", "bias"):
            timm[f"stages.{i}.downsample.0.{leaf}"] = ours[f"downsample_layers.{i}.0.norm.{leaf}"]
            timm[f"stages.{i}.downsample.1.{leaf}"] = ours[f"downsample_layers.{i}.1.{leaf}"]
    renames = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}
    for key, value in ours.items():
        parts = key.split(".")
        if parts[0] == "stages":
            inner = parts[3] if parts[3] == "gamma" else f"{renames[parts[3]]}.{parts[4]}"
            timm[f"stages.{parts[1]}.blocks.{parts[2]}.{inner}"] = value
    path = tmp_path / "convnext.safetensors"
    save_file({k: v.contiguous() for k, v in timm.items()}, str(path))
    load_imagenet_weights(model, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_load_imagenet_weights_reports_missing_and_misshaped_keys(tmp_path) -> None:
    model = _tiny_convnext()
    source = _official_layout(model)
    del source["stages.1.0.dwconv.weight"]
    torch.save(source, tmp_path / "missing.pth")
    with pytest.raises(UserError, match=r"stages\.1\.0\.dwconv\.weight"):
        load_imagenet_weights(model, tmp_path / "missing.pth")
    source = _official_layout(model)
    source["stages.0.0.pwconv1.weight"] = torch.randn(5, 8)
    torch.save(source, tmp_path / "shape.pth")
    with pytest.raises(UserError, match=r"stages\.0\.0\.pwconv1\.weight"):
        load_imagenet_weights(model, tmp_path / "shape.pth")
    with pytest.raises(UserError, match="no such file"):
        load_imagenet_weights(model, tmp_path / "absent.pth")
