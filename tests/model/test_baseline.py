"""The per-pixel DeepLabv3+ baseline: contract, geometry, gradients, training on a tiny synthetic batch."""

from __future__ import annotations

import pytest
import torch
from polymax_task_helpers import synthetic_batch, task_metric, tiny_config, train

from polymax.build import build_baseline, build_criterion, build_model
from polymax.data.synthetic import SYNTH_MAX_DEPTH, SYNTH_MIN_DEPTH
from polymax.errors import UserError
from polymax.model.baseline import DeepLabV3Plus
from polymax.model.heads.semantic import semantic_map
from polymax.model.meta_arch import KMaX
from polymax.presets.polymax import POLYMAX_PRESETS
from polymax.structures import DepthOutput, NormalsOutput, SegmentationOutput


@pytest.mark.parametrize("kind", ["semantic", "depth", "normals"])
def test_outputs_follow_the_model_contract(kind):
    model = build_model(f"deeplabv3plus_tiny_synth_{kind}")
    assert isinstance(model, DeepLabV3Plus) and model.config.architecture == "deeplabv3plus"
    images = torch.rand(2, 3, 41, 57) * 255
    run = model(images).run
    prediction = run.final
    assert run.task == kind and run.aux == [] and run.semantic_logits is None
    assert type(prediction) is {"semantic": SegmentationOutput, "depth": DepthOutput, "normals": NormalsOutput}[kind]
    if kind == "semantic":
        assert prediction.class_logits is None
    assert prediction.mask_logits.shape[2:] == prediction.pixel_features.shape[2:] == (17, 17)  # 65×65 at stride 4
    torch.testing.assert_close(prediction.pixel_features.norm(dim=1), torch.ones(2, 17, 17))
    if kind == "semantic":
        assert prediction.mask_logits.shape[1] == 6
        assert semantic_map(prediction, (41, 57)).shape == (2, 41, 57)
    if kind == "depth":
        assert prediction.depth.shape == (2, 1, 17, 17)
        assert prediction.depth.min() > SYNTH_MIN_DEPTH and prediction.depth.max() < SYNTH_MAX_DEPTH
        torch.testing.assert_close(prediction.depth, SYNTH_MIN_DEPTH + (SYNTH_MAX_DEPTH - SYNTH_MIN_DEPTH)
                                   * torch.sigmoid(prediction.mask_logits))
    if kind == "normals":
        torch.testing.assert_close(prediction.normals.norm(dim=1), torch.ones(2, 17, 17))


def test_same_input_contract_as_kmax():
    images = torch.rand(1, 3, 30, 40) * 255
    torch.testing.assert_close(DeepLabV3Plus.preprocess(images), KMaX.preprocess(images))
    model = build_model("polymax_tiny_synth_depth", architecture="deeplabv3plus")
    assert isinstance(model, DeepLabV3Plus)
    with pytest.raises(UserError, match="RGB"):
        model(torch.rand(1, 30, 40))


def test_every_parameter_is_trained():
    config = tiny_config("depth", "deeplabv3plus")
    model = build_baseline(config)
    for module in model.modules():  # residual branches start at zero (BN γ = 0): give every norm a scale
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    images, targets = synthetic_batch(2, (37, 45))
    build_criterion(config)(model(images).run, targets).total.backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
              or not p.grad.any()]
    assert not silent, f"parameters without gradient: {silent}"


def test_baseline_presets_mirror_the_polymax_ones():
    for name, make in POLYMAX_PRESETS.items():
        if name.startswith("deeplabv3plus_"):
            twin = POLYMAX_PRESETS["polymax_" + name.removeprefix("deeplabv3plus_")]()
            config = make()
            assert (config.backbone, config.dataset, config.task_names, config.crop_size) == (
                twin.backbone, twin.dataset, twin.task_names, twin.crop_size)
            assert config.task().aux_semantic == "none"


def test_only_dense_tasks_have_a_baseline():
    from dataclasses import replace
    config = tiny_config("depth", "deeplabv3plus")
    with pytest.raises(UserError, match="panoptic"):
        build_baseline(replace(config, tasks=(replace(config.task(), name="panoptic"),)))


@pytest.mark.parametrize(("kind", "lower_is_better"), [("depth", True), ("normals", True), ("semantic", False)])
def test_baseline_trains_on_a_tiny_synthetic_batch(kind, lower_is_better):
    torch.manual_seed(0)
    config = tiny_config(kind, "deeplabv3plus")
    model = build_baseline(config)
    images, targets = synthetic_batch(2)
    before = task_metric(model, kind, images, targets)
    losses = train(model, build_criterion(config), images, targets, steps=20)
    after = task_metric(model, kind, images, targets)
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3]), losses
    if lower_is_better:
        assert after < 0.8 * before, (before, after)
    else:
        assert after > before + 0.2, (before, after)
