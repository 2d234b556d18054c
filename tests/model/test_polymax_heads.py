"""PolyMaX task heads: depth bins, normals, K = C semantic — on random MaskPredictions and on the tiny trunk."""

from __future__ import annotations

import pytest
import torch
from polymax_task_helpers import synthetic_batch, task_metric, tiny_config, train

from polymax.build import build_criterion, build_model
from polymax.model.heads.depth import DepthHead
from polymax.model.heads.normals import NormalsHead
from polymax.model.heads.semantic import SemanticClusterHead, semantic_map, semantic_probabilities
from polymax.presets.polymax import POLYMAX_PRESETS
from polymax.structures import DepthOutput, MaskPrediction, NormalsOutput, SegmentationOutput
from polymax.tasks import get_task


def mask_prediction(batch=2, clusters=5, height=6, width=7, channels=12, scale=1.0) -> MaskPrediction:
    return MaskPrediction(mask_logits=scale * torch.randn(batch, clusters, height, width),
                          pixel_features=torch.randn(batch, 4, height, width),
                          cluster_features=scale * torch.randn(batch, clusters, channels))


def test_depth_is_the_probability_weighted_bin_centre_inside_the_range():
    head = DepthHead(in_channels=12, num_predictions=3, min_depth=0.5, max_depth=4.0)
    layer = mask_prediction()
    out = head(layer, 1)
    assert out.depth.shape == (2, 1, 6, 7) and out.cluster_depth.shape == (2, 5)
    expected = torch.einsum("bkhw,bk->bhw", torch.softmax(layer.mask_logits, dim=1), out.cluster_depth)
    torch.testing.assert_close(out.depth[:, 0], expected)
    assert out.mask_logits is layer.mask_logits and out.pixel_features is layer.pixel_features
    # Extreme features and logits: bins saturate at the bounds but never leave them.
    wild = head(mask_prediction(scale=1e4), 2)
    assert wild.depth.min() >= 0.5 and wild.depth.max() <= 4.0
    assert wild.cluster_depth.min() >= 0.5 and wild.cluster_depth.max() <= 4.0


def test_one_hot_probabilities_select_one_bin_and_one_normal():
    layer = mask_prediction(clusters=3)
    logits = torch.full((2, 3, 6, 7), -1e4)
    logits[:, 2] = 1e4
    layer.mask_logits = logits
    depth = DepthHead(in_channels=12, num_predictions=1, min_depth=0.1, max_depth=10.0)(layer, 0)
    torch.testing.assert_close(depth.depth[:, 0], depth.cluster_depth[:, 2, None, None].expand(2, 6, 7))
    normals = NormalsHead(in_channels=12, num_predictions=1)(layer, 0)
    torch.testing.assert_close(normals.normals, normals.cluster_normals[:, 2, :, None, None].expand(2, 3, 6, 7))


def test_normals_and_cluster_normals_are_unit_vectors():
    out = NormalsHead(in_channels=12, num_predictions=2)(mask_prediction(), 1)
    assert out.normals.shape == (2, 3, 6, 7) and out.cluster_normals.shape == (2, 5, 3)
    torch.testing.assert_close(out.normals.norm(dim=1), torch.ones(2, 6, 7))
    torch.testing.assert_close(out.cluster_normals.norm(dim=-1), torch.ones(2, 5))


@pytest.mark.parametrize("make", [
    lambda: DepthHead(in_channels=12, num_predictions=4, min_depth=0.1, max_depth=5.0),
    lambda: NormalsHead(in_channels=12, num_predictions=4),
    lambda: SemanticClusterHead(num_classes=5, in_channels=12, num_predictions=4),
])
def test_every_prediction_has_its_own_weights_and_every_parameter_gets_a_gradient(make):
    head = make()
    layer = mask_prediction()
    before = [head(layer, i) for i in range(4)]
    with torch.no_grad():
        for name, parameter in head.named_parameters():
            if name.startswith(("mlps.2.", "class_head.classifiers.2.")):
                parameter.add_(1.0)
    after = [head(layer, i) for i in range(4)]
    field = lambda p: next(v for k, v in p.tensors().items() if k not in ("mask_logits", "pixel_features"))
    for index in range(4):
        changed = not torch.allclose(field(before[index]), field(after[index]))
        assert changed == (index == 2), f"prediction {index}"
    total = sum(field(p).square().sum() for p in after)
    total.backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_semantic_head_checks_k_equals_c_and_reads_the_map_from_the_probabilities():
    head = SemanticClusterHead(num_classes=5, in_channels=12, num_predictions=2)
    with pytest.raises(ValueError, match="K = C"):
        head(mask_prediction(clusters=4), 0)
    layer = mask_prediction(clusters=5)
    out = head(layer, 1)
    assert out.class_logits.shape == (2, 5, 6)  # C + void
    probabilities = semantic_probabilities(out)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2, 6, 7))
    assert torch.equal(semantic_map(out), layer.mask_logits.argmax(dim=1))
    # Onto a 21×25 input (padded to 33×33, stride 4 → 9×9 predictions): cropped to the input size.
    big = SegmentationOutput(mask_logits=torch.randn(1, 5, 9, 9), pixel_features=torch.zeros(1, 1, 9, 9))
    assert semantic_map(big, (21, 25)).shape == (1, 21, 25)


def test_build_head_rejects_a_semantic_trunk_with_k_not_c():
    from polymax.errors import UserError
    config = tiny_config("semantic")
    with pytest.raises(UserError, match="num_queries"):
        get_task("semantic").build_head(config, config.task(), num_predictions=7, num_queries=7)
    with pytest.raises(UserError, match="kmax_decoder.num_queries"):
        build_model(config, **{"kmax_decoder.num_queries": 7})
    # Its own query group of K = C centres makes any shared K fine.
    model = build_model(config, **{"kmax_decoder.num_queries": 7, "tasks.semantic.num_queries": 6})
    assert model.kmax_decoder.task_centres["semantic"].shape[0] == 6


def test_preset_table_names_clusters_and_ranges():
    expected = {f"polymax_{b}_{d}_{t}" for b in ("r50", "convnext_tiny", "convnext_small", "convnext_base",
                                                   "convnext_large") for d in ("nyu", "taskonomy")
                for t in ("semantic", "depth", "normals")}
    expected |= {f"polymax_tiny_synth_{t}" for t in ("semantic", "depth", "normals", "semantic_depth")}
    assert expected <= set(POLYMAX_PRESETS)
    assert {n for n in POLYMAX_PRESETS if n.startswith("polymax_")} == expected
    nyu_depth, tk_depth = POLYMAX_PRESETS["polymax_r50_nyu_depth"](), POLYMAX_PRESETS["polymax_r50_taskonomy_depth"]()
    assert nyu_depth.kmax_decoder.num_queries == 16
    assert (nyu_depth.task().min_depth, nyu_depth.task().max_depth) == (1e-3, 10)
    assert tk_depth.task().max_depth == 128.0
    assert POLYMAX_PRESETS["polymax_convnext_large_nyu_normals"]().kmax_decoder.num_queries == 8
    nyu_sem = POLYMAX_PRESETS["polymax_convnext_base_nyu_semantic"]()
    assert nyu_sem.kmax_decoder.num_queries == nyu_sem.dataset.num_classes == 40
    tk_sem = POLYMAX_PRESETS["polymax_r50_taskonomy_semantic"]()
    assert tk_sem.kmax_decoder.num_queries == tk_sem.dataset.num_classes
    for name, make in POLYMAX_PRESETS.items():
        config = make()
        assert config.preset == name
        assert config.architecture == ("deeplabv3plus" if name.startswith("deeplabv3plus_") else "kmax")
        assert all(n % 32 == 1 for n in config.crop_size)


@pytest.mark.parametrize("kind", ["semantic", "depth", "normals"])
def test_tiny_synth_preset_runs_and_every_parameter_gets_a_gradient(kind):
    model = build_model(f"polymax_tiny_synth_{kind}")
    # Residual branches start at zero (last BN γ = 0), which blocks some gradients at step 0 by design; give every
    # norm a non-zero scale so that the test sees whether each parameter is connected to the loss.
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    images, targets = synthetic_batch(2, (41, 57))
    run = model(images).run
    assert run.task == kind and isinstance(run.final, get_task(kind).output_type)
    assert run.final.mask_logits.shape[:2] == (2, model.config.kmax_decoder.num_queries)
    assert run.final.mask_logits.shape[2:] == (17, 17)  # 65×65 padded input at stride 4
    assert len(run.aux) == sum(model.config.kmax_decoder.num_layers)  # one per kMaX layer
    criterion = build_criterion(model.config)
    criterion(run, targets).total.backward()
    # The shared bias of the single-channel BN on the mask logits shifts every cluster's logit equally; the
    # task outputs read the logits only through a softmax over clusters, so its gradient is analytically zero
    # (deeplab2 has the same parameter) and numerically ~0: it must be in the graph, not non-zero.
    shift_invariant = {n for n, _ in model.named_parameters() if n.endswith("logit_norm.bias")}
    silent = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
              or (not p.grad.any() and n not in shift_invariant)]
    assert not silent, f"parameters without gradient: {silent}"


@pytest.mark.parametrize(("kind", "steps", "loss_ratio", "lower_is_better"), [
    ("depth", 20, 0.9, True), ("normals", 20, 0.9, True),
    # The kMaX semantic total is dominated by the slowly-moving instance-discrimination terms.
    ("semantic", 25, 0.95, False)])
def test_each_head_trains_on_a_tiny_synthetic_batch(kind, steps, loss_ratio, lower_is_better):
    torch.manual_seed(0)
    config = tiny_config(kind)
    model = build_model(config)
    criterion = build_criterion(config)
    images, targets = synthetic_batch(2)
    before = task_metric(model, kind, images, targets)
    losses = train(model, criterion, images, targets, steps=steps)
    after = task_metric(model, kind, images, targets)
    assert sum(losses[-3:]) < loss_ratio * sum(losses[:3]), losses
    if lower_is_better:
        assert after < 0.8 * before, (before, after)
    else:
        assert after > before + 0.2, (before, after)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["polymax_r50_nyu_depth", "polymax_r50_nyu_normals", "polymax_r50_nyu_semantic",
                                  "deeplabv3plus_r50_nyu_depth"])
def test_full_size_presets_build_and_predict(name):
    model = build_model(name).eval()
    with torch.no_grad():
        run = model(torch.rand(1, 3, 65, 65) * 255).run
    prediction = run.final
    assert prediction.mask_logits.shape[2:] == (17, 17)
    assert len(run.aux) == (0 if name.startswith("deeplabv3plus") else 6)
    if isinstance(prediction, DepthOutput):
        assert float(prediction.depth.min()) >= 1e-3 and float(prediction.depth.max()) <= 10.0
    if isinstance(prediction, NormalsOutput):
        torch.testing.assert_close(prediction.normals.norm(dim=1), torch.ones(1, 17, 17))
    if name.endswith("semantic"):
        assert prediction.mask_logits.shape[1] == 40 and prediction.class_logits.shape == (1, 40, 41)
    assert type(prediction) is get_task(run.task).output_type
