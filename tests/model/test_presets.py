"""Contract over every preset: declared output fields / shapes / strides, parameter counts of spec §7,
gradients everywhere (tiny preset), builder errors. Big presets are built once on the meta device."""

from __future__ import annotations

import functools

import pytest
import torch

from polymax.build import build_model, resolve_config
from polymax.config.model import ModelConfig, TaskConfig
from polymax.errors import UserError
from polymax.presets import PRESETS
from polymax.structures import ModelOutput, SegmentationOutput
from polymax.tasks import TASKS
from polymax.tools.analysis import count_flops, count_parameters

# Inference parameters (without the training-only semantic branch), spec §7.
SPEC_PARAMETERS = {
    "kmax_r50_coco": 56.58e6, "kmax_axial_r50_coco": 74.42e6, "kmax_convnext_tiny_coco": 60.94e6,
    "kmax_convnext_small_coco": 82.57e6, "kmax_convnext_base_coco": 121.51e6,
    "kmax_convnext_large_coco": 231.84e6, "kmax_r50_cityscapes": 56.40e6,
    "kmax_convnext_tiny_cityscapes": 60.76e6, "kmax_r50_ade20k": 56.61e6, "kmax_convnext_large_ade20k": 231.87e6,
}
SPEC_TOTAL = {"kmax_r50_coco": 72.44e6, "kmax_axial_r50_coco": 90.27e6, "kmax_convnext_large_coco": 243.88e6,
              "kmax_r50_cityscapes": 56.99e6, "kmax_convnext_tiny_cityscapes": 60.98e6, "kmax_r50_ade20k": 72.47e6}
TINY = ("kmax_tiny_test", "polymax_tiny_synth_panoptic")
# The kMaX panoptic presets (the PolyMaX heads and baselines test their own presets).
PANOPTIC = sorted(n for n, make in PRESETS.items()
                  if make().task_names == ("panoptic",) and make().architecture == "kmax")
SIZE = (50, 70)                          # padded to 65 × 97


@functools.cache
def meta_model(name: str):
    with torch.device("meta"):
        return build_model(name)


def _check_contract(model, output: ModelOutput, *, batch: int, training: bool) -> None:
    """The panoptic run of ``output``: final and auxiliary shapes, strides and the semantic branch's logits."""
    config: ModelConfig = model.config
    task = config.task()
    run = output.run
    final = run.final
    assert run.task == task.name == "panoptic" and isinstance(final, SegmentationOutput)
    pad_h, pad_w = 65, 97
    stride = config.high_res_stride
    k, c = task.num_queries or config.kmax_decoder.num_queries, config.dataset.num_classes + 1
    if training and config.kmax_decoder.drop_query > 0:
        k = final.mask_logits.shape[1]
    h, w = (pad_h - 1) // stride + 1, (pad_w - 1) // stride + 1
    assert final.mask_logits.shape == (batch, k, h, w)
    assert final.pixel_features.shape == (batch, config.head.mask_dim, h, w)
    assert final.class_logits.shape == (batch, k, c)
    layer_strides = [s for s, n in zip((32, 16, 8), config.kmax_decoder.num_layers) for _ in range(n)]
    assert len(run.aux) == len(layer_strides)
    for aux, s in zip(run.aux, layer_strides):
        size = ((pad_h - 1) // s + 1, (pad_w - 1) // s + 1)
        assert aux.mask_logits.shape == (batch, k, *size)
        assert aux.pixel_features.shape == (batch, config.head.mask_dim, *size)
        assert aux.class_logits.shape == (batch, k, c)
    if training and task.aux_semantic != "none":
        s = {"decoder": 4, "head": 32}[task.aux_semantic]
        assert run.semantic_logits.shape == (batch, c, (pad_h - 1) // s + 1, (pad_w - 1) // s + 1)
    else:
        assert run.semantic_logits is None


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_config_is_complete(name):
    config = PRESETS[name]()
    assert isinstance(config, ModelConfig) and config.preset == name
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert config.tasks and all(task.name in TASKS for task in config.tasks)
    assert len(set(config.task_names)) == len(config.tasks)
    if name in PANOPTIC:
        info = config.dataset
        assert info.num_classes > 0 and len(info.colors) == info.num_classes
        assert all(0 <= c < info.num_classes for c in info.thing_classes)


# One preset per structural variant runs by default (meta forwards cost ~1 s each); the rest are slow.
REPRESENTATIVE = ("kmax_r50_coco", "kmax_axial_r50_coco", "kmax_r50_cityscapes", "kmax_convnext_tiny_cityscapes")


@pytest.mark.parametrize("name", [n if n in REPRESENTATIVE else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(set(PANOPTIC) - set(TINY))])
def test_preset_shapes_on_meta_device(name):
    model = meta_model(name)
    # Training mode: also covers the semantic branch (eval mode differs only there; see the tiny presets).
    model.train()
    _check_contract(model, model(torch.zeros(2, 3, *SIZE, device="meta")), batch=2, training=True)


@pytest.mark.parametrize("name", sorted(SPEC_PARAMETERS))
def test_parameter_counts_match_spec(name):
    model = meta_model(name)
    inference = count_parameters(model)
    assert abs(inference - SPEC_PARAMETERS[name]) <= 1e-3 * SPEC_PARAMETERS[name], inference
    if name in SPEC_TOTAL:
        total = count_parameters(model, inference=False)
        assert abs(total - SPEC_TOTAL[name]) <= 1e-3 * SPEC_TOTAL[name], total


@pytest.mark.parametrize("name", TINY)
def test_tiny_presets_run_and_every_parameter_learns(name):
    model = build_model(name)
    # deeplab2 starts residual branches at zero (last BN γ = 0), which blocks gradients at step 0 by design;
    # give every norm a non-zero scale so the test sees whether each parameter is connected to the outputs. A
    # training-mode BN output has zero mean, so with β = 0 the mean-square loss gives β exactly no gradient (the
    # mask logits' 1-channel norm): non-zero shifts too, or the check depends on the rounding of the thread count.
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.5, 0.5)
    images = torch.rand(2, 3, *SIZE) * 255
    output = model(images)
    _check_contract(model, output, batch=2, training=True)
    run = output.run
    outputs = [*run.final.tensors().values(), run.semantic_logits]
    for aux in run.aux:
        outputs += list(aux.tensors().values())
    assert len(outputs) == 3 + 1 + 3 * len(run.aux)     # mask / class logits and pixel features everywhere
    assert all(torch.isfinite(t).all() for t in outputs)
    sum(t.square().mean() for t in outputs).backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
              or not p.grad.any()]
    assert not silent, f"parameters without gradient: {silent}"
    model.eval()
    with torch.no_grad():
        _check_contract(model, model(images), batch=2, training=False)


def test_model_checks_its_input():
    model = build_model("kmax_tiny_test").eval()
    for bad in (torch.zeros(3, 33, 33), torch.zeros(1, 4, 33, 33), torch.zeros(1, 3, 33, 33, dtype=torch.uint8),
                torch.full((1, 3, 33, 33), float("nan"))):
        with pytest.raises(UserError):
            model(bad)


def test_padding_is_mid_grey():
    # A 33×33 image and the same image padded with 127.5 to 40×40 (→ 65×65) give the same top-left outputs.
    model = build_model("kmax_tiny_test", backbone__drop_path_keep=1.0, kmax_decoder__drop_path_keep=1.0).eval()
    image = torch.rand(1, 3, 40, 40) * 255
    image[..., 33:, :] = 127.5
    image[..., :, 33:] = 127.5
    with torch.no_grad():
        x = model.preprocess(image)
        assert x.shape == (1, 3, 65, 65) and torch.all(x[..., 33:, :] == 0) and torch.all(x[..., :, 33:] == 0)
        torch.testing.assert_close(model(image).final.mask_logits, model(image[..., :39, :37]).final.mask_logits)


def test_builder_errors_and_overrides():
    with pytest.raises(UserError, match="kmax_r50_coco"):
        build_model("kmax_r50_coc")
    with pytest.raises(UserError):
        build_model("kmax_tiny_test", no_such_field=1)
    with pytest.raises(UserError):
        build_model("kmax_tiny_test", kmax_decoder__no_such_field=1)
    with pytest.raises(UserError):
        build_model("kmax_tiny_test", tasks__no_such_task__aux_semantic="none")
    with pytest.raises(UserError):
        build_model("kmax_tiny_test", tasks=(TaskConfig(name="no_such_task"),))
    with pytest.raises(UserError):
        build_model("kmax_tiny_test", **{"tasks.panoptic.no_such_field": 1})
    config = resolve_config("kmax_r50_coco", kmax_decoder__num_queries=256, crop_size=(641, 641))
    assert config.kmax_decoder.num_queries == 256 and config.crop_size == (641, 641)
    assert build_model("kmax_tiny_test", kmax_decoder__num_queries=5).kmax_decoder.cluster_centres.shape[0] == 5


def test_flops_are_counted_by_running_the_model():
    model = build_model("kmax_tiny_test")
    small, large = count_flops(model, (33, 33)), count_flops(model, (65, 65))
    assert 0 < small < large and model.training


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(PANOPTIC) - set(TINY)))
def test_big_presets_forward_without_nan(name):
    model = build_model(name).eval()
    with torch.no_grad():
        output = model(torch.rand(2, 3, *SIZE) * 255)
    _check_contract(model, output, batch=2, training=False)
    assert torch.isfinite(output.final.mask_logits).all() and torch.isfinite(output.final.class_logits).all()
