"""--set model.backbone_init=FILE: ImageNet backbones from torchvision / timm ResNet-50 and official ConvNeXt files."""

from __future__ import annotations

import pytest
import torch

from polymax.errors import UserError
from polymax.model.backbones import ConvNeXt, ResNet
from polymax.model.backbones.init import load_backbone_init

WIDTH = 8


def torchvision_resnet(depths=(1, 2, 1, 1), width=WIDTH) -> dict[str, torch.Tensor]:
    """A torchvision / timm ResNet state dict (Bottleneck naming, expansion 4) with random values."""
    state = {"conv1.weight": torch.randn(width, 3, 7, 7), "fc.weight": torch.randn(10, 32 * width),
             "fc.bias": torch.randn(10)}

    def bn(prefix, channels):
        state.update({f"{prefix}.weight": torch.randn(channels), f"{prefix}.bias": torch.randn(channels),
                      f"{prefix}.running_mean": torch.randn(channels), f"{prefix}.running_var": torch.rand(channels),
                      f"{prefix}.num_batches_tracked": torch.tensor(7)})
    bn("bn1", width)
    in_channels = width
    for layer, depth in enumerate(depths, start=1):
        mid = width * 2 ** (layer - 1)
        for block in range(depth):
            p = f"layer{layer}.{block}"
            state[f"{p}.conv1.weight"] = torch.randn(mid, in_channels, 1, 1)
            state[f"{p}.conv2.weight"] = torch.randn(mid, mid, 3, 3)
            state[f"{p}.conv3.weight"] = torch.randn(4 * mid, mid, 1, 1)
            bn(f"{p}.bn1", mid), bn(f"{p}.bn2", mid), bn(f"{p}.bn3", 4 * mid)
            if block == 0:
                state[f"{p}.downsample.0.weight"] = torch.randn(4 * mid, in_channels, 1, 1)
                bn(f"{p}.downsample.1", 4 * mid)
            in_channels = 4 * mid
    return state


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_resnet_layout(tmp_path, fmt):
    source = torchvision_resnet()
    path = tmp_path / f"resnet50.{fmt}"
    if fmt == "pth":
        torch.save({"state_dict": {f"module.{k}": v for k, v in source.items()}}, path)
    else:
        from safetensors.torch import save_file
        save_file(source, str(path))
    model = ResNet(depths=(1, 2, 1, 1), width=WIDTH)
    line = load_backbone_init(model, path)
    assert torch.equal(model.stem.conv.weight, source["conv1.weight"])
    assert torch.equal(model.stem.bn.running_var, source["bn1.running_var"])
    assert torch.equal(model.stage3.blocks[1].conv2.conv.weight, source["layer2.1.conv2.weight"])
    assert torch.equal(model.stage3.blocks[0].shortcut.bn.bias, source["layer2.0.downsample.1.bias"])
    assert torch.equal(model.stage5.blocks[0].conv3.bn.running_mean, source["layer4.0.bn3.running_mean"])
    assert "torchvision/timm ResNet layout" in line and "missing 0," in line and "unexpected 0," in line
    assert "classifier tensors skipped 2" in line and "\n" not in line


def test_missing_and_unexpected_keys_are_summarised(tmp_path):
    source = torchvision_resnet()
    del source["layer4.0.conv3.weight"]
    source["layer4.0.se.fc.weight"] = torch.randn(3)
    torch.save(source, tmp_path / "r.pth")
    line = load_backbone_init(ResNet(depths=(1, 2, 1, 1), width=WIDTH), tmp_path / "r.pth")
    assert "missing 1 (e.g. stage5.blocks.0.conv3.conv.weight)" in line and "unexpected 1" in line


def test_wrong_size_and_unknown_layout_are_one_line_errors(tmp_path):
    torch.save(torchvision_resnet(width=16), tmp_path / "big.pth")
    with pytest.raises(UserError, match="another shape"):
        load_backbone_init(ResNet(depths=(1, 2, 1, 1), width=WIDTH), tmp_path / "big.pth")
    torch.save({"encoder.weight": torch.randn(2)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="neither a ResNet"):
        load_backbone_init(ResNet(depths=(1, 2, 1, 1), width=WIDTH), tmp_path / "other.pth")
    with pytest.raises(UserError, match="does not exist"):
        load_backbone_init(ResNet(), tmp_path / "none.pth")


def test_official_convnext_layout_22k(tmp_path):
    model = ConvNeXt(depths=(1, 1, 2, 1), dims=(8, 16, 32, 64))
    # The official release: channels-first LNs without our ".norm", classifier "head" (21841 classes for 22K).
    source = {key.replace(".norm.", ".") if key.startswith("downsample_layers") else key: torch.randn_like(value)
              for key, value in model.state_dict().items()}
    source.update({"norm.weight": torch.ones(64), "norm.bias": torch.zeros(64),
                   "head.weight": torch.randn(21841, 64), "head.bias": torch.zeros(21841)})
    torch.save({"model": source}, tmp_path / "convnext_22k.pth")
    line = load_backbone_init(model, tmp_path / "convnext_22k.pth")
    assert torch.equal(model.downsample_layers[2][0].norm.weight, source["downsample_layers.2.0.weight"])
    assert torch.equal(model.stages[2][1].pwconv1.weight, source["stages.2.1.pwconv1.weight"])
    assert "official ConvNeXt layout" in line and "missing 0," in line and "classifier tensors skipped 4" in line


def test_training_config_loads_it(tmp_path, capsys):
    from polymax.config.train import load_config
    from polymax.engine.assemble import build_training_model

    config = load_config(overrides=["model.preset=polymax_tiny_synth_depth"])
    own = build_training_model(config).backbone.state_dict()
    source = {"conv1.weight": torch.randn_like(own["stem.conv.weight"]), "layer1.0.conv1.weight":
              torch.randn_like(own["stage2.blocks.0.conv1.conv.weight"])}
    torch.save(source, tmp_path / "partial.pth")
    config = load_config(overrides=["model.preset=polymax_tiny_synth_depth",
                                    f"model.backbone_init={tmp_path / 'partial.pth'}"])
    model = build_training_model(config)
    assert torch.equal(model.backbone.stem.conv.weight, source["conv1.weight"])
    assert "loaded 2 tensors" in capsys.readouterr().out
