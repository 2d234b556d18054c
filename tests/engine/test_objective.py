"""The training objective: one task keeps its criterion's term names; several tasks are prefixed and summed, and
``fit`` trains every task of a model on one trunk pass per micro-batch."""

from __future__ import annotations

import json

import pytest
import torch
from polymax_task_helpers import synthetic_batch

from polymax.build import build_criterion, build_model
from polymax.config.model import TaskConfig
from polymax.config.train import TrainConfig, load_config
from polymax.data import build_dataset
from polymax.data.synthetic import SYNTH_MAX_DEPTH, SYNTH_MIN_DEPTH
from polymax.engine.assemble import build_collate
from polymax.engine.objective import build_objective
from polymax.engine.sampler import SeededDataset
from polymax.engine.train import fit
from polymax.errors import UserError

DEPTH = TaskConfig(name="depth", aux_semantic="none", min_depth=SYNTH_MIN_DEPTH, max_depth=SYNTH_MAX_DEPTH)


def _two_task_model():
    return build_model("kmax_tiny_test", tasks=(TaskConfig(name="panoptic"), DEPTH))


def test_one_task_keeps_its_criterion_names():
    model = build_model("kmax_tiny_test")
    images, targets = synthetic_batch(2, (33, 33))
    output = model(images)
    objective = build_objective(model.config, TrainConfig())
    assert objective.tasks == ("panoptic",)
    terms = objective(output, targets)
    reference = build_criterion(model.config)(output.run, targets)
    assert terms.names() == reference.names() and "pq_style_loss_class_term" in terms
    torch.testing.assert_close(terms.total, reference.total)


def test_several_tasks_are_prefixed_and_summed():
    model = _two_task_model()
    images, targets = synthetic_batch(2, (33, 33))
    output = model(images, task=model.tasks)
    train_config = TrainConfig.from_dict({"depth_loss": {"gradient": 0.0}})
    terms = build_objective(model.config, train_config)(output, targets)
    parts = {task: build_criterion(model.config, task, train_config)(output[task], targets) for task in model.tasks}
    expected = [f"{task}/{name}" for task in model.tasks for name in parts[task].names()]
    assert terms.names() == expected
    assert "panoptic/semantic_loss" in terms and "depth/aux_0depth_silog_loss" in terms
    assert not any("gradient" in name for name in terms.names())      # the depth_loss section is read
    torch.testing.assert_close(terms.total, parts["panoptic"].total + parts["depth"].total)
    terms.total.backward()
    for task in model.tasks:       # both heads learn from the summed loss
        assert any(p.grad is not None and p.grad.any() for p in model.heads[task].parameters()), task


def test_task_weights_scale_each_tasks_terms():
    model = _two_task_model()
    images, targets = synthetic_batch(2, (33, 33))
    output = model(images, task=model.tasks)
    plain = build_objective(model.config, TrainConfig())(output, targets)
    weighted = build_objective(model.config, TrainConfig.from_dict({"loss": {"task_weights": {"depth": 2.5}}}))(
        output, targets)
    for name in plain.names():
        factor = 2.5 if name.startswith("depth/") else 1.0
        torch.testing.assert_close(weighted[name], plain[name] * factor)
    with pytest.raises(UserError, match="normals"):
        build_objective(model.config, TrainConfig.from_dict({"loss": {"task_weights": {"normals": 2}}}))
    with pytest.raises(UserError, match="at least 0"):
        TrainConfig.from_dict({"loss": {"task_weights": {"depth": -1}}})


def test_the_objective_names_the_missing_task_output():
    model = _two_task_model().eval()
    images, targets = synthetic_batch(1, (33, 33))
    with torch.no_grad():
        output = model(images, task="depth")
    with pytest.raises(KeyError, match="panoptic"):
        build_objective(model.config)(output, targets)


def test_fit_trains_every_task_on_one_trunk_pass(tmp_path):
    config = load_config(overrides=[
        "steps=2", "data.batch_size=2", "data.accumulate=2", "data.workers=0", f"out_dir={tmp_path}",
        "optim.warmup_steps=0", "log_every=1", "progress=false", "tensorboard=false"])
    torch.manual_seed(config.seed)
    model = _two_task_model()
    passes = []
    model.backbone.register_forward_hook(lambda *_: passes.append(1))
    scenes = build_dataset("synth", split="train", size=tuple(model.config.crop_size), num_samples=2)
    result = fit(config, model=model, objective=build_objective(model.config, config), train_set=SeededDataset(scenes),
                 collate_fn=build_collate(model.config))
    assert result.step == 2 and len(passes) == 2 * 2                  # steps × micro-batches, both tasks each time
    logged = json.loads((tmp_path / "scalars.jsonl").read_text().splitlines()[-1])
    assert "loss/panoptic/pq_style_loss_class_term" in logged and "loss/depth/depth_silog_loss" in logged
    assert logged["loss/total"] == pytest.approx(result.losses[-1])
