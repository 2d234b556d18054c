"""The contract every entry of ``polymax.tasks.TASKS`` keeps: its head's outputs, zero loss at a perfect
prediction, decoding back to the labels at odd image sizes, flip equivariance of its test-time rule, and its
labels surviving every training augmentation. A new task is checked by adding it to TASKS (and one line to the
tables below)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polymax.build import build_criterion, build_model
from polymax.config.model import ModelConfig, PostProcessConfig, TaskConfig
from polymax.config.train import TrainConfig
from polymax.data import build_dataset
from polymax.data.augment import TrainAugmentation
from polymax.data.collate import collate
from polymax.data.synthetic import SYNTH_INFO, SYNTH_MAX_DEPTH, SYNTH_MIN_DEPTH
from polymax.geometry import Geometry, padded_size
from polymax.inference.tta import predict_dense
from polymax.presets import PRESETS
from polymax.structures import Targets, TaskRun
from polymax.tasks import TASKS

# Per-task test settings: the queries of the task's own group (0 = the shared 16) and the metric values of a
# perfect prediction.
OWN_QUERIES = {"semantic": SYNTH_INFO.num_classes}
PERFECT_SCORES = {
    "panoptic": {"pq": 1.0, "sq": 1.0, "rq": 1.0, "miou": 1.0},
    "semantic": {"miou": 1.0},
    "instance": {"ap": 1.0},
    "depth": {"abs_rel": 0.0, "rms": 0.0, "delta1": 1.0},
    "normals": {"mean": 0.0, "within_11_25": 1.0},
    "depth_tokens": {"abs_rel": 0.0, "rms": 0.0, "delta1": 1.0},
    "instance_tokens": {"ap": 1.0},
}
ALL_TASKS = sorted(TASKS)


def test_every_task_is_covered_by_the_tables():
    assert set(PERFECT_SCORES) == set(TASKS)


def task_config(name: str) -> ModelConfig:
    """The tiny synthetic-room trunk with the one task ``name`` (merging without area limits)."""
    base = PRESETS["polymax_tiny_synth_panoptic"]()
    task = TaskConfig(name=name, num_queries=OWN_QUERIES.get(name, 0), aux_semantic="none",
                      min_depth=SYNTH_MIN_DEPTH, max_depth=SYNTH_MAX_DEPTH)
    postprocess = PostProcessConfig(thing_area_limit=0, stuff_area_limit=0)
    return replace(base, preset=f"contract_{name}", tasks=(task,), postprocess=postprocess)


def synth_targets(size: tuple[int, int], count: int = 2, seed: int = 0) -> tuple[torch.Tensor, Targets]:
    samples = list(build_dataset("synth", split="val", size=size, num_samples=count, seed=seed))
    batch = collate(samples, ignore_label=SYNTH_INFO.ignore_label, label_divisor=SYNTH_INFO.label_divisor)
    return batch.images, batch.targets


def pad_targets(targets: Targets, size: tuple[int, int]) -> Targets:
    """Labels padded bottom / right to ``size`` as void (ids), 0 (depth) or all-zero (normals)."""
    height, width = targets.semantic.shape[-2:]
    pad = (0, size[1] - width, 0, size[0] - height)
    void = SYNTH_INFO.ignore_label
    return Targets(semantic=F.pad(targets.semantic, pad, value=void),
                   panoptic=F.pad(targets.panoptic, pad, value=void * SYNTH_INFO.label_divisor),
                   depth=F.pad(targets.depth, pad), normals=F.pad(targets.normals, pad),
                   crowd=None if targets.crowd is None else F.pad(targets.crowd, pad))


@pytest.mark.parametrize("name", ALL_TASKS)
def test_head_outputs_and_gradients(name):
    definition, config = TASKS[name], task_config(name)
    model = build_model(config)
    images, targets = synth_targets((33, 33))
    run = model(images, task=name)[name]
    queries = config.task(name).num_queries or config.kmax_decoder.num_queries
    assert isinstance(run.final, definition.output_type)
    assert run.final.mask_logits.shape == (2, queries, 9, 9)                  # stride 4 of 33
    for field in definition.export_names:
        assert getattr(run.final, field) is not None and getattr(run.final, field).shape[0] == 2, field
    assert len(run.aux) == sum(config.kmax_decoder.num_layers)
    assert all(isinstance(aux, definition.output_type) for aux in run.aux)
    criterion = build_criterion(config, name)
    criterion(run, targets).total.backward()
    missing = [n for n, p in model.heads[name].named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"head parameters without gradient: {missing}"


@pytest.mark.parametrize("name", ALL_TASKS)
def test_zero_loss_at_a_perfect_prediction(name):
    definition, config = TASKS[name], task_config(name)
    queries = config.task(name).num_queries or config.kmax_decoder.num_queries
    _, targets = synth_targets((33, 33))
    # The pixel-contrastive term compares embeddings with a temperature: no output makes it zero.
    train = TrainConfig()
    train = replace(train, loss=replace(train.loss, inst_disc_weight=0.0))
    criterion = build_criterion(config, name, train)
    perfect = definition.perfect_output(targets, config, config.task(name), num_queries=queries)
    loss = criterion(TaskRun(task=name, final=perfect, aux=[perfect]), targets)
    assert float(loss.total) < 1e-3, loss
    # …and the check can fail: the same output for other labels costs something.
    _, others = synth_targets((33, 33), seed=7)
    wrong = definition.perfect_output(others, config, config.task(name), num_queries=queries)
    assert float(criterion(TaskRun(task=name, final=wrong, aux=[wrong]), targets).total) > 0.05


@pytest.mark.parametrize("name", ALL_TASKS)
@pytest.mark.parametrize("size", [(37, 51), (30, 33)])
def test_decode_round_trip_at_odd_sizes(name, size):
    """A perfect output at the network's input resolution decodes to the labels at the image's own size."""
    definition, config = TASKS[name], task_config(name)
    task = config.task(name)
    queries = task.num_queries or config.kmax_decoder.num_queries
    _, targets = synth_targets(size)
    network = padded_size(size)
    geometry = Geometry(original=size, content=size, network=network)
    perfect = definition.perfect_output(pad_targets(targets, network), config, task, num_queries=queries)
    decode, metrics = definition.build_decoder(config, task), definition.build_metrics(config, task)
    for index in range(2):
        one = type(perfect)(**{k: v[index: index + 1] for k, v in perfect.__dict__.items()})
        result = decode(one, geometry)
        assert result.task == name and tuple(result.size) == size
        metrics.update(result, targets, index)
    scores = metrics.compute()
    for key, value in PERFECT_SCORES[name].items():
        assert scores[key] == pytest.approx(value, abs=1e-3), (key, scores[key])


def _has_flip_rule(name: str) -> bool:
    try:
        TASKS[name].tta_values(TASKS[name].output_type(mask_logits=torch.zeros(1, 1, 1, 1),
                                                       pixel_features=torch.zeros(1, 1, 1, 1)))
    except ValueError as error:
        return "flip" not in str(error)
    return True


@pytest.mark.parametrize("name", ALL_TASKS)
def test_flip_rule_is_equivariant(name):
    definition = TASKS[name]
    torch.manual_seed(0)
    model = build_model(task_config(name)).eval()
    images = torch.rand(1, 3, 29, 43) * 255
    if not _has_flip_rule(name):
        with pytest.raises(ValueError, match="no flip"):
            predict_dense(model, images, task=name, flip=True)
        return
    original = predict_dense(model, images, task=name, flip=True)
    mirrored = predict_dense(model, images.flip(-1), task=name, flip=True)
    torch.testing.assert_close(mirrored, definition.flip_back(original), atol=1e-5, rtol=1e-4)


VALID = {
    "ids": lambda values: bool(((values >= 0) & ((values < SYNTH_INFO.num_classes * SYNTH_INFO.label_divisor * 2)
                                                  | (values == SYNTH_INFO.ignore_label)
                                                  | (values // SYNTH_INFO.label_divisor == SYNTH_INFO.ignore_label))
                                 ).all()),
    "scalar": lambda values: bool(torch.isfinite(values).all() and (values >= 0).all() and (values > 0).any()),
    "vector": lambda values: bool(torch.isclose(values.norm(dim=0)[values.abs().sum(dim=0) > 0],
                                                torch.tensor(1.0), atol=1e-3).all()
                                  and (values.abs().sum(dim=0) > 0).any()),
}


@pytest.mark.parametrize("name", ALL_TASKS)
def test_labels_survive_every_augmentation(name):
    samples = list(build_dataset("synth", split="train", size=(49, 57), num_samples=2, seed=3))
    augment = TrainAugmentation(crop_size=(41, 41), min_scale=0.5, max_scale=2.0, scale_step=0.25,
                                autoaugment="simple", flip_prob=1.0, rotation_degrees=15.0, rotation_prob=1.0,
                                color_jitter_prob=1.0, copy_paste=True, thing_classes=SYNTH_INFO.thing_classes,
                                label_divisor=SYNTH_INFO.label_divisor, ignore_label=SYNTH_INFO.ignore_label)
    for seed in range(4):
        out = augment(samples[0], np.random.default_rng(seed), paste_source=samples[1])
        for field in TASKS[name].labels:
            before, after = getattr(samples[0], field.name), getattr(out, field.name)
            assert after is not None, field
            assert after.shape[-2:] == out.image.shape[-2:] == (41, 41), field
            assert after.dtype == before.dtype, field
            assert VALID[field.kind](after), (field, seed)
