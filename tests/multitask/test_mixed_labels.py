"""One model for every dense task trained on mixed labels: each image trains the tasks its labels support, a
missing label never becomes a target, and per-image task sampling works with per-task query groups."""

from __future__ import annotations

import pytest
import torch

from polymax.build import build_model
from polymax.config.train import TrainConfig, load_config
from polymax.data import build_dataset
from polymax.data.collate import collate
from polymax.engine.objective import build_objective, select_targets, supported_tasks
from polymax.errors import UserError

TASKS = ("panoptic", "semantic", "instance", "depth", "normals")


@pytest.fixture(scope="module")
def rooms():
    return build_dataset("synth", split="train", size=(33, 33), num_samples=4)


def _batch(rooms, drop: dict[int, tuple[str, ...]] | None = None):
    samples = [rooms[i] for i in range(len(rooms))]
    for index, fields in (drop or {}).items():
        for name in fields:
            setattr(samples[index], name, None)
    return collate(samples)


def test_supported_tasks_reads_the_labels_each_image_has(rooms):
    batch = _batch(rooms, {1: ("depth",), 2: ("normals", "semantic"), 3: ("panoptic",)})
    table = supported_tasks(batch.targets, TASKS)
    expected = torch.tensor([[1, 1, 1, 1, 1],
                             [1, 1, 1, 0, 1],
                             [0, 0, 1, 1, 0],        # panoptic reads semantic too; instance only panoptic
                             [0, 1, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(table, expected)


def test_an_image_without_depth_gives_no_depth_loss(rooms):
    torch.manual_seed(0)
    model = build_model("polymax_multitask_tiny_synth").train()
    objective = build_objective(model.config, TrainConfig())
    assert objective.sampler is None                  # per-task groups: every supported task on every image
    batch = _batch(rooms, {1: ("depth",), 3: ("depth",)})
    output = model(batch.images, **objective.model_inputs(4, batch.targets))
    terms = objective(output, batch.targets)
    assert all(torch.isfinite(v) for v in terms.values.values())
    # The depth terms equal the depth criterion on the two labelled images, weighted by their share (2 of 4).
    from polymax.engine.objective import select_run
    index = torch.tensor([0, 2])
    alone = objective.criteria["depth"](select_run(output["depth"], index), select_targets(batch.targets, index))
    for name, value in alone.values.items():
        assert torch.allclose(terms.values[f"depth/{name}"], value * 0.5)
    # A batch with no depth at all trains no depth.
    none = _batch(rooms, {i: ("depth",) for i in range(4)})
    output = model(none.images, **objective.model_inputs(4, none.targets))
    assert not any(name.startswith("depth/") for name in objective(output, none.targets).values)


def test_per_image_sampling_with_query_groups_draws_supported_tasks(rooms):
    torch.manual_seed(0)
    model = build_model("polymax_multitask_tiny_synth").train()
    config = load_config(None, overrides=["oneformer.task_sampling=image"])
    objective = build_objective(model.config, config)
    assert objective.sampler is not None
    batch = _batch(rooms, {0: ("depth", "normals"), 1: ("depth", "normals")})
    for _ in range(5):
        inputs = objective.model_inputs(4, batch.targets)
        assert all(task not in ("depth", "normals") for task in inputs["sample_tasks"][:2])
    output = model(batch.images, **inputs)
    drawn = sorted(int(b) for run in output.runs.values() for b in run.samples)
    assert drawn == [0, 1, 2, 3]                     # every image in exactly one task's run
    for run in output.runs.values():
        assert run.final.mask_logits.shape[0] == run.samples.numel()
    terms = objective(output, batch.targets)
    terms.total.backward()
    assert torch.isfinite(terms.total)


def test_shared_sampling_draws_the_prompted_tasks_and_runs_the_grouped_ones_on_every_image(rooms):
    torch.manual_seed(0)
    model = build_model("polymax_multitask_tiny_synth").train()
    config = load_config(None, overrides=["oneformer.task_sampling=shared"])
    objective = build_objective(model.config, config)
    assert objective.sampler.tasks == ("panoptic", "instance")            # the shared task-guided group
    assert objective.every_image == ("semantic", "depth", "normals")     # their own query groups
    batch = _batch(rooms, {1: ("depth",)})
    inputs = objective.model_inputs(4, batch.targets)
    assert inputs["task"] == objective.every_image and len(inputs["sample_tasks"]) == 4
    output = model(batch.images, **inputs)
    for task in objective.every_image:                                  # the whole batch, no sample index
        assert output[task].samples is None and output[task].final.mask_logits.shape[0] == 4
    drawn = sorted(int(b) for task in ("panoptic", "instance") if task in output.runs
                   for b in output[task].samples)
    assert drawn == [0, 1, 2, 3]                                       # each image under one prompt
    terms = objective(output, batch.targets)
    terms.total.backward()
    assert torch.isfinite(terms.total)
    assert any(name.startswith("depth/") for name in terms.values)      # three of four images have depth


def test_a_task_cannot_be_drawn_and_run_on_every_image_at_once(rooms):
    model = build_model("polymax_multitask_tiny_synth").train()
    with pytest.raises(ValueError, match="both drawn"):
        model(_batch(rooms).images, task=("depth", "panoptic"), sample_tasks=("panoptic",) * 4)


def test_task_sampling_must_be_known():
    with pytest.raises(UserError, match="task_sampling"):
        load_config(None, overrides=["oneformer.task_sampling=sometimes"])
