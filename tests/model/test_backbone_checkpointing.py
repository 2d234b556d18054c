"""Gradient checkpointing of the backbone stages (``model.checkpoint_backbone``): the same outputs, gradients and
BatchNorm statistics as without, the stages really recomputed in backward, nothing changed in inference."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from polymax.build import build_model
from polymax.config.model import ModelConfig
from polymax.config.train import TrainConfig, apply_override
from polymax.engine.assemble import model_overrides
from polymax.model.backbones import ConvNeXt, ResNet, convnext_tiny, resnet50, resnet_tiny


def _pair(module: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(the module as built, a copy with checkpointing on): the same weights and buffers."""
    checkpointed = copy.deepcopy(module)
    checkpointed.checkpoint = True
    return module, checkpointed


def _train_step(model: nn.Module, images: torch.Tensor, seed: int = 3):
    """Training-mode forward of every endpoint (a weighted sum, so that each element has its own gradient),
    backward; returns (endpoints, gradients by parameter name)."""
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)                                   # the same drop-path masks in both runs
    features = model(images)
    endpoints = [getattr(features, f"stage{i}") for i in range(1, 6)]
    generator = torch.Generator().manual_seed(seed)
    loss = sum((e * torch.randn(e.shape, generator=generator)).sum() for e in endpoints)
    loss.backward()
    return endpoints, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _assert_identical_steps(plain: nn.Module, checkpointed: nn.Module, images: torch.Tensor) -> None:
    outputs, grads = _train_step(plain, images)
    outputs_ckpt, grads_ckpt = _train_step(checkpointed, images)
    for a, b in zip(outputs, outputs_ckpt):
        assert torch.equal(a, b)
    assert grads.keys() == grads_ckpt.keys() and len(grads) == len(list(plain.parameters()))
    for name, grad in grads.items():
        assert torch.equal(grad, grads_ckpt[name]), name
    # BatchNorm statistics moved once, not twice (the recomputation does not track them).
    buffers, buffers_ckpt = dict(plain.named_buffers()), dict(checkpointed.named_buffers())
    for name, buffer in buffers.items():
        assert torch.equal(buffer, buffers_ckpt[name]), name


def test_tiny_resnet_with_drop_path_gives_identical_outputs_gradients_and_statistics():
    torch.manual_seed(0)
    plain, checkpointed = _pair(resnet_tiny(width=8, drop_path_keep=0.7))
    _assert_identical_steps(plain, checkpointed, torch.randn(2, 3, 65, 49))
    norms = [m for m in checkpointed.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(int(norm.num_batches_tracked) == 1 for norm in norms)   # one step counted once
    assert all(bool(norm.running_mean.abs().sum() > 0) for norm in norms)          # and the statistics moved


def test_resnet50_and_convnext_topologies_at_a_small_width_give_identical_steps():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 33, 33)
    _assert_identical_steps(*_pair(ResNet(depths=(3, 4, 6, 3), width=8)), images)
    _assert_identical_steps(*_pair(ConvNeXt(depths=(2, 2, 3, 2), dims=(8, 16, 24, 32), drop_path_keep=0.8)), images)


@pytest.mark.slow  # ~10 s on two busy cores: 51M parameters, each model twice
def test_resnet50_and_convnext_tiny_give_identical_outputs_gradients_and_statistics():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 33, 33)
    _assert_identical_steps(*_pair(resnet50()), images)
    _assert_identical_steps(*_pair(convnext_tiny(drop_path_keep=0.8)), images)


def test_stages_are_recomputed_in_training_only():
    torch.manual_seed(0)
    backbone = resnet_tiny(width=8, checkpoint=True)
    calls = []
    # A pre-hook: the recomputation stops as soon as it has what backward needs, before the stage returns.
    backbone.stage4.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    images = torch.randn(1, 3, 33, 33)
    backbone.train()
    sum(value.sum() for value in vars(backbone(images)).values()).backward()
    assert len(calls) == 2                                    # the forward pass, then the recomputation
    calls.clear()
    backbone.eval()
    with torch.no_grad():
        backbone(images)
    assert len(calls) == 1


def test_the_model_setting_reaches_the_backbone_and_round_trips():
    config = apply_override(TrainConfig(), "model.checkpoint_backbone=true")
    model = build_model("kmax_tiny_test", **model_overrides(config))
    assert model.config.checkpoint_backbone is True and model.backbone.checkpoint is True
    assert build_model("kmax_tiny_test").backbone.checkpoint is False
    saved = model.config.to_dict()
    assert saved["checkpoint_backbone"] is True
    assert ModelConfig.from_dict(saved) == model.config
    saved.pop("checkpoint_backbone")                          # a config.json written before the field
    assert ModelConfig.from_dict(saved).checkpoint_backbone is False


def test_a_tiny_model_trains_the_same_with_checkpointing():
    """The whole kMaX model (backbone + decoder) in training mode: outputs and every gradient identical."""
    torch.manual_seed(0)
    plain = build_model("kmax_tiny_test")
    checkpointed = build_model("kmax_tiny_test", checkpoint_backbone=True)
    checkpointed.load_state_dict(plain.state_dict())
    images = torch.rand(2, 3, 33, 33) * 255
    results = []
    for model in (plain, checkpointed):
        model.train()
        torch.manual_seed(5)
        output = model(images, task=model.tasks)
        final = output[model.tasks[0]].final
        loss = final.mask_logits.square().mean() + final.class_logits.square().mean()
        loss.backward()
        results.append((final.mask_logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    assert torch.equal(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        other = results[1][1][name]
        assert (grad is None) == (other is None), name
        assert grad is None or torch.equal(grad, other), name
    for (name, buffer), (_, other) in zip(plain.named_buffers(), checkpointed.named_buffers()):
        assert torch.equal(buffer, other), name


if __name__ == "__main__":   # pragma: no cover
    pytest.main([__file__])
