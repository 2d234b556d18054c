"""Inference fusion: fused oneDNN convolutions compute what conv → (+ residual) → activation computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import polymax.inference.fuse as fuse_module
from polymax.build import build_model
from polymax.inference.fold import fold_batch_norms
from polymax.inference.fuse import FusedConv2d, FusedResidualBlock, fuse_for_inference, optimise_for_inference
from polymax.model.layers.conv import ConvBN
from polymax.tools.analysis import count_flops

needs_kernels = pytest.mark.skipif(fuse_module._KERNELS is None, reason="this PyTorch has no oneDNN fused convs")


def _reference(conv: nn.Conv2d, x: torch.Tensor, residual: torch.Tensor | None, activation: str) -> torch.Tensor:
    y = conv(x) if residual is None else conv(x) + residual
    return {"none": y, "relu": F.relu(y), "gelu": F.gelu(y)}[activation]


@pytest.mark.parametrize("activation", ["none", "relu", "gelu"])
@pytest.mark.parametrize(("kernel", "stride", "dilation", "groups"), [(1, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 1),
                                                                       (5, 1, 1, 8)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fused_conv_equals_conv_then_activation(activation, kernel, stride, dilation, groups, layout) -> None:
    torch.manual_seed(0)
    padding = dilation * (kernel - 1) // 2
    conv = nn.Conv2d(8, 16, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups).eval()
    fused = FusedConv2d(conv, activation)
    x = torch.randn(2, 8, 13, 11)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), _reference(conv, x, None, activation), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["none", "relu"])
@pytest.mark.parametrize("residual_layout", ["contiguous", "channels_last", "strided"])
def test_fused_conv_adds_the_residual_before_the_activation(activation, residual_layout) -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 16, 1).eval()
    x = torch.randn(1, 8, 9, 9).contiguous(memory_format=torch.channels_last)
    if residual_layout == "strided":            # a subsampled shortcut, as a strided block passes it
        residual = torch.randn(1, 16, 17, 17).contiguous(memory_format=torch.channels_last)[:, :, ::2, ::2]
    else:
        layout = torch.channels_last if residual_layout == "channels_last" else torch.contiguous_format
        residual = torch.randn(1, 16, 9, 9).contiguous(memory_format=layout)
    with torch.no_grad():
        result = FusedConv2d(conv, activation)(x, residual=residual)
    torch.testing.assert_close(result, _reference(conv, x, residual, activation), rtol=1e-5, atol=1e-5)


def test_fallback_path_is_used_for_gradients_and_other_dtypes(monkeypatch) -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    fused = FusedConv2d(conv, "gelu")
    x = torch.randn(1, 4, 7, 7, requires_grad=True)
    residual = torch.randn(1, 6, 7, 7)
    out = fused(x, residual=residual)                              # autograd: the plain operations
    out.sum().backward()
    assert x.grad is not None and conv.weight.grad is not None
    fused64 = FusedConv2d(conv.double(), "gelu")
    with torch.no_grad():
        torch.testing.assert_close(fused64(x.double()), _reference(conv, x.double(), None, "gelu"))
    # Under CPU autocast the convolution runs in bfloat16, as the unfused one would.
    conv = nn.Conv2d(4, 6, 3, padding=1)
    fused = FusedConv2d(conv, "relu")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert fused(x.detach()).dtype == conv(x.detach()).dtype == torch.bfloat16
    # A PyTorch without the oneDNN kernels computes the same through the fallback.
    with torch.no_grad():
        with_kernels = fused(x.detach(), residual=residual)
        monkeypatch.setattr(fuse_module, "_KERNELS", None)
        torch.testing.assert_close(fused(x.detach(), residual=residual), with_kernels, rtol=1e-6, atol=1e-6)


def test_unfusable_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="activation"):
        FusedConv2d(nn.Conv2d(2, 2, 1), "silu")
    with pytest.raises(ValueError, match="zero-padded"):
        FusedConv2d(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), "relu")


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("kmax_tiny_test").eval()


def test_optimised_copy_matches_the_model_and_leaves_it_untouched() -> None:
    model = _tiny_model()
    images = torch.rand(2, 3, 65, 81, generator=torch.Generator().manual_seed(1)) * 255
    fast = optimise_for_inference(model)
    assert fast is not model and not fast.training
    assert fast.fused_convolutions > 0 and fast.fused_blocks > 0
    assert not any(isinstance(m, (FusedConv2d, FusedResidualBlock)) for m in model.modules())
    with torch.no_grad():
        reference, result = model(images).final, fast(images).final
    for name in ("mask_logits", "pixel_features", "class_logits"):
        ours, theirs = getattr(result, name), getattr(reference, name)
        assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max(), name
    assert count_flops(fast, (65, 81)) == count_flops(model, (65, 81))      # fused convs are counted


def test_every_trunk_convolution_and_block_of_kmax_r50_is_fused() -> None:
    with torch.device("meta"):
        model = build_model("kmax_r50_coco")
    fused = fuse_for_inference(fold_batch_norms(model, inplace=True), inplace=True)
    trunk = [fused.backbone, fused.pixel_decoder]
    blocks = [m for part in trunk for m in part.modules() if isinstance(m, FusedResidualBlock)]
    assert len(blocks) == 16 + 8        # ResNet-50's 16 bottlenecks; the decoder's 1 + 5 axial + 2 bottlenecks
    plain = [name for part in trunk for name, m in part.named_modules()
             if isinstance(m, ConvBN) and not isinstance(m.conv, FusedConv2d)]
    assert plain == []
    # Inside a ReLU stage every block but the last hands the next one its activated input.
    stage = fused.backbone.stage3.blocks
    assert [b.conv3.activation for b in stage] == ["relu", "relu", "relu", "none"]
    assert isinstance(stage[0].input_activation, nn.ReLU)
    assert all(isinstance(b.input_activation, nn.Identity) for b in stage[1:])
    # GELU cannot follow an add in oneDNN: decoder blocks keep their own input activation.
    assert all(b.conv3.activation == "none" and isinstance(b.input_activation, nn.GELU)
               for b in fused.pixel_decoder.stages[1].blocks)


@needs_kernels
def test_fused_model_runs_the_fused_kernels() -> None:
    fast = optimise_for_inference(_tiny_model())
    calls = []
    original = fuse_module._KERNELS

    def counting(kernel):
        def wrapped(*args):
            calls.append(kernel)
            return kernel(*args)
        return wrapped

    fuse_module._KERNELS = tuple(counting(kernel) for kernel in original)
    try:
        with torch.inference_mode():
            fast(torch.rand(1, 3, 65, 65) * 255)
    finally:
        fuse_module._KERNELS = original
    assert original[1] in calls and original[0] in calls          # residual and plain fused convolutions
