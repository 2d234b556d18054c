"""The DeepLabv3+ baseline as the paper runs it: output stride 16 (atrous ResNet stage5), ASPP 6/12/18;
baseline folders saved before the setting existed still load as the stride-32 model they were."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from polymax.build import build_model, resolve_config
from polymax.errors import UserError
from polymax.io.pretrained import load_model, save_pretrained


def test_baseline_presets_run_stage5_at_stride_16():
    model = build_model("deeplabv3plus_tiny_synth_depth").eval()
    assert model.config.baseline_output_stride == 16
    assert [conv.conv.dilation[0] for conv in model.decoder.aspp.atrous] == [6, 12, 18]
    images = torch.rand(1, 3, 65, 65) * 255
    with torch.no_grad():
        features = model.backbone(model.preprocess(images))
        output = model(images)
    assert features.stage4.shape[-2:] == features.stage5.shape[-2:] == (5, 5)      # 65 → 5 at stride 16
    assert all(conv.conv2.conv.dilation == (2, 2) for conv in model.backbone.stage5.blocks)
    assert output["depth"].final.depth.shape[-2:] == (17, 17)                        # still stride 4
    assert resolve_config("deeplabv3plus_r50_nyu_depth").baseline_output_stride == 16
    assert resolve_config("deeplabv3plus_convnext_large_nyu_depth").baseline_output_stride == 32


def test_a_folder_saved_without_the_field_loads_as_stride_32(tmp_path):
    torch.manual_seed(0)
    old = build_model("deeplabv3plus_tiny_synth_depth", baseline_output_stride=32).eval()
    save_pretrained(old, tmp_path)
    header = json.loads((tmp_path / "config.json").read_text())
    del header["config"]["baseline_output_stride"]                 # as written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(header))
    loaded = load_model(tmp_path).eval()
    assert loaded.config.baseline_output_stride == 32
    images = torch.rand(1, 3, 65, 65) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["depth"].final.depth, old(images)["depth"].final.depth)
        assert loaded.backbone(loaded.preprocess(images)).stage5.shape[-2:] == (3, 3)


def test_stride_16_needs_a_resnet():
    config = dataclasses.replace(resolve_config("deeplabv3plus_convnext_tiny_nyu_depth"), baseline_output_stride=16)
    from polymax.build import build_baseline
    with pytest.raises(UserError, match="needs a ResNet backbone"):
        build_baseline(config)
