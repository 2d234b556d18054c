"""BatchNorm folding: a folded model computes what the unfolded one computes (eval mode), with fewer BNs."""

from __future__ import annotations

import pytest
import torch
from deeplab2_fixture import assert_close_to_scale, golden_outputs, nhwc_to_nchw, official_variables
from torch import nn

from polymax.build import build_model
from polymax.inference.fold import count_batch_norms, fold_batch_norms


def _randomise_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial statistics and affines, so that a wrong fold cannot pass as the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(shape, generator=generator) * 1.5 + 0.25)
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.2)


def _tiny(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("kmax_tiny_test").to(dtype).eval()
    _randomise_batch_norms(model)
    return model


def _assert_predictions_close(folded, reference, atol: float) -> None:
    for name in ("mask_logits", "pixel_features", "class_logits"):
        ours, theirs = getattr(folded.final, name), getattr(reference.final, name)
        scale = theirs.abs().max().item()
        assert (ours - theirs).abs().max().item() <= atol * max(scale, 1.0), name
    assert len(folded.aux) == len(reference.aux) > 0
    for ours, theirs in zip(folded.aux, reference.aux):
        assert torch.allclose(ours.mask_logits, theirs.mask_logits, rtol=0, atol=atol * theirs.mask_logits.abs().max())


def test_folded_copy_matches_the_model_and_leaves_it_untouched() -> None:
    # float64: the k-means argmax inside the decoder must not flip on rounding differences.
    model = _tiny()
    before = count_batch_norms(model)
    images = torch.rand(2, 3, 65, 81, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 255
    folded = fold_batch_norms(model)
    assert folded is not model and not folded.training
    assert folded.folded_batch_norms > 0
    assert count_batch_norms(folded) == before - folded.folded_batch_norms
    assert count_batch_norms(model) == before                      # the original keeps its BNs
    with torch.no_grad():
        reference, result = model(images).run, folded(images).run
    _assert_predictions_close(result, reference, atol=1e-9)


def test_in_place_folding_in_float32_and_channels_last() -> None:
    model = _tiny(torch.float32).to(memory_format=torch.channels_last)
    images = torch.rand(1, 3, 65, 65, generator=torch.Generator().manual_seed(2)) * 255
    with torch.no_grad():
        reference = model.backbone(model.preprocess(images))
        same = fold_batch_norms(model, inplace=True)
        folded = model.backbone(model.preprocess(images))
    assert same is model
    stem = model.backbone.stem
    assert isinstance(stem.bn, nn.Identity) and stem.conv.bias is not None
    assert stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert stem.conv.weight.dtype == torch.float32
    for name in ("stage2", "stage3", "stage4", "stage5"):
        ours, theirs = getattr(folded, name), getattr(reference, name)
        assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max(), name
    # Folding twice is a no-op (nothing left to fold).
    assert fold_batch_norms(model, inplace=True).folded_batch_norms == 0


def test_every_conv_bn_pair_of_the_trunk_is_folded() -> None:
    with torch.device("meta"):
        model = build_model("kmax_r50_coco")
    folded = fold_batch_norms(model, inplace=True)
    leftover = {name.rsplit(".", 1)[-1] for name, module in folded.named_modules()
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and name.startswith(("backbone", "pixel_"))}
    # Only the attention's similarity / retrieval BNs (they follow an einsum, not a conv) remain in the trunk.
    assert leftover == {"bn_similarity", "bn_retrieved"}


@pytest.mark.slow
def test_folded_trunk_reproduces_the_official_outputs(parity) -> None:
    from polymax.convert.deeplab2_trunk import convert_trunk
    from polymax.model.backbones import resnet50
    from polymax.model.pixel_decoder import KMaXPixelDecoder

    variables = official_variables(parity, "coco_r50")
    with torch.device("meta"):
        backbone = resnet50()
        decoder = KMaXPixelDecoder(in_channels=backbone.channels)
    state, _ = convert_trunk(variables, backbone=backbone, pixel_decoder=decoder)
    trunk = nn.ModuleDict({"backbone": backbone, "pixel_decoder": decoder}).to_empty(device="cpu")
    trunk.load_state_dict(state, strict=False)
    for name, buffer in trunk.named_buffers():
        if name.endswith("num_batches_tracked"):
            buffer.zero_()
    trunk = fold_batch_norms(trunk).to(memory_format=torch.channels_last)
    golden = golden_outputs(parity, "coco_r50")
    image = torch.from_numpy(golden["input_image"]).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        features = trunk["backbone"]((image / 127.5 - 1).contiguous(memory_format=torch.channels_last))
        pixels = trunk["pixel_decoder"](features)
    for name, tensor in {"backbone/stage5": features.stage5, "pixel_decoder/decoder_stage2": pixels.os16,
                         "pixel_decoder/decoder_output": pixels.high_res}.items():
        assert_close_to_scale(tensor.contiguous().numpy(), nhwc_to_nchw(golden[name]), f"folded {name}")



def test_eval_attention_with_folded_norms_equals_the_per_term_batch_norms() -> None:
    from polymax.model.layers.axial_attention import AxialAttention

    torch.manual_seed(0)
    attention = AxialAttention(24, key_depth=16, value_depth=32, num_heads=4).double().eval()
    _randomise_batch_norms(attention, seed=3)
    for length in (1, 7, 300):          # 300 > 255: distances beyond ±254 share the outer table rows
        x = torch.randn(2, 24, length, dtype=torch.float64, requires_grad=True)
        fast = attention(x)
        q, k, v = attention.bn_qkv(attention.qkv(x)).split((16, 16, 32), dim=1)
        reference = attention._attend(q.reshape(2, 4, 4, length), k.reshape(2, 4, 4, length),
                                      v.reshape(2, 4, 8, length))
        assert fast.shape == reference.shape == (2, 32, length)
        assert torch.allclose(fast, reference, rtol=0, atol=1e-10)
        grad_fast, = torch.autograd.grad(fast.square().sum(), x)
        grad_reference, = torch.autograd.grad(reference.square().sum(), x)
        assert torch.allclose(grad_fast, grad_reference, rtol=0, atol=1e-9)
