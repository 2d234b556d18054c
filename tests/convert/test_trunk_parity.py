"""The trunk (backbone + pixel decoder) loaded through convert_trunk reproduces the official deeplab2 outputs.

Fixtures: tests/fixtures/deeplab2_parity (README §5, §8): every float array within max|Δ| ≤ 1e-4·max|ref|.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deeplab2_fixture import assert_close_to_scale, golden_outputs, nhwc_to_nchw, official_variables

from polymax.convert.deeplab2_trunk import convert_trunk, trunk_entries
from polymax.errors import UserError
from polymax.model.backbones import axial_resnet50, convnext_tiny, resnet50
from polymax.model.pixel_decoder import KMaXPixelDecoder

BACKBONES = {"coco_r50": resnet50, "coco_convnext_tiny": convnext_tiny}


def _split(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def converted(request, parity):
    fixture = request.param
    variables = official_variables(parity, fixture)
    with torch.device("meta"):      # every value comes from the checkpoint: skip the (slow) initialisation
        backbone = BACKBONES[fixture]()
        decoder = KMaXPixelDecoder(in_channels=backbone.channels)
    state, consumed = convert_trunk(variables, backbone=backbone, pixel_decoder=decoder)
    for prefix, module in (("backbone.", backbone), ("pixel_decoder.", decoder)):
        module.to_empty(device="cpu").eval()
        for name, buffer in module.named_buffers():
            if name.endswith("num_batches_tracked"):
                buffer.zero_()
        result = module.load_state_dict(_split(state, prefix), strict=False)
        assert not result.unexpected_keys
        assert [k for k in result.missing_keys if not k.endswith("num_batches_tracked")] == []
    return fixture, variables, consumed, backbone, decoder


def test_every_trunk_variable_is_consumed(converted) -> None:
    _, variables, consumed, _, _ = converted
    trunk = {name for name in variables if name.startswith(("encoder/", "pixel_decoder/"))}
    assert consumed == trunk


def test_trunk_matches_the_official_outputs(converted, parity) -> None:
    fixture, _, _, backbone, decoder = converted
    golden = golden_outputs(parity, fixture)
    image = torch.from_numpy(golden["input_image"]).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        features = backbone(image / 127.5 - 1)
        pixels = decoder(features)
    ours = {"backbone/stage2": features.stage2, "backbone/stage3": features.stage3,
            "backbone/stage4": features.stage4, "backbone/stage5": features.stage5,
            "pixel_decoder/decoder_stage1": pixels.os32, "pixel_decoder/decoder_stage2": pixels.os16,
            "pixel_decoder/decoder_stage3": pixels.os8, "pixel_decoder/decoder_output": pixels.high_res}
    ratios = {name: assert_close_to_scale(tensor.numpy(), nhwc_to_nchw(golden[name]), f"{fixture} {name}")
              for name, tensor in ours.items()}
    print(f"\n{fixture}: " + ", ".join(f"{name} {ratio:.2g}" for name, ratio in ratios.items()))


def test_missing_and_misshaped_variables_are_user_errors(parity) -> None:
    variables = dict(official_variables(parity, "coco_r50"))
    with torch.device("meta"):
        backbone, decoder = resnet50(), KMaXPixelDecoder(in_channels=(64, 256, 512, 1024, 2048))
        convnext = convnext_tiny()
    with pytest.raises(UserError, match="lacks"):                 # an R50 checkpoint for a ConvNeXt preset
        convert_trunk(variables, backbone=convnext, pixel_decoder=decoder)
    name = "pixel_decoder/_stages/1/_block2/_attention/_width_axis/_value_rpe/embeddings"
    variables[name] = np.zeros((509, 63), np.float32)
    with pytest.raises(UserError, match="_value_rpe/embeddings"):
        convert_trunk(variables, backbone=backbone, pixel_decoder=decoder)


def test_max_s_names_follow_the_checkpoint_layout() -> None:
    with torch.device("meta"):
        backbone = axial_resnet50()
        decoder = KMaXPixelDecoder(in_channels=backbone.channels)
    entries = {tf: key for tf, key, _ in trunk_entries(backbone=backbone, pixel_decoder=decoder)}
    assert entries["encoder/_stem/_conv3_bn/_conv/kernel"] == "backbone.stem.conv3.conv.weight"
    assert entries["encoder/_stage5/_block1/_attention/_height_axis/qkv_kernel"] == (
        "backbone.stage5.blocks.0.attention.height_axis.qkv.weight")
    assert "encoder/_stage4/_block1/_conv2_bn_act/_conv/kernel" in entries      # bottleneck at stride 8
    assert "encoder/_stage4/_block2/_conv2_bn_act/_conv/kernel" not in entries  # axial from stride 16
    # Every parameter and BN statistic of the trunk is named exactly once.
    state = {f"backbone.{k}" for k in backbone.state_dict()} | {f"pixel_decoder.{k}" for k in decoder.state_dict()}
    wanted = {key for key in state if not key.endswith("num_batches_tracked")}
    assert sorted(entries.values()) == sorted(wanted)
