"""Joint OneFormer training: the per-image task draw, per-task losses weighted by their share of the batch, the
query-text contrastive loss owned by the objective (trained, checkpointed, not saved with the model), resume, and
a few steps under 2-process gloo DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from oneformer_helpers import SMALL_TEXT, oneformer_config, oneformer_model
from polymax_task_helpers import synthetic_batch

from polymax.build import build_criterion
from polymax.engine.assemble import build_collate, build_train_set, build_training_model
from polymax.engine.objective import TaskSampler, build_objective, select_targets
from polymax.engine.train import fit


def test_the_draw_follows_the_probabilities_and_its_seed():
    draws = TaskSampler({"panoptic": 0.5, "semantic": 0.0, "instance": 0.5}, seed=3)(400)
    assert "semantic" not in draws and 150 < draws.count("panoptic") < 250
    assert TaskSampler({"panoptic": 1, "instance": 1}, seed=3)(20) == TaskSampler({"panoptic": 1, "instance": 1},
                                                                                   seed=3)(20)
    with pytest.raises(Exception, match="not all 0"):
        TaskSampler({"panoptic": 0.0})


def test_one_task_with_probability_one_is_single_task_training():
    torch.manual_seed(0)
    model = oneformer_model()
    config = oneformer_config(None, "oneformer.semantic_probability=0", "oneformer.instance_probability=0",
                              "oneformer.contrastive_weight=0")
    objective = build_objective(model.config, config)
    images, targets = synthetic_batch(2, (65, 65))
    inputs = objective.model_inputs(2)
    assert inputs == {"sample_tasks": ("panoptic", "panoptic")}
    torch.manual_seed(1)
    terms = objective(model(images, **inputs), targets)
    torch.manual_seed(1)
    reference = build_criterion(model.config, "panoptic", config)(model(images, task="panoptic")["panoptic"], targets)
    assert terms.names() == [f"panoptic/{name}" for name in reference.names()]
    torch.testing.assert_close(terms.total, reference.total)


def test_each_task_is_weighted_by_its_share_and_the_text_loss_is_added():
    torch.manual_seed(0)
    model = oneformer_model()
    config = oneformer_config()
    objective = build_objective(model.config, config)
    images, targets = synthetic_batch(3, (65, 65))
    output = model(images, sample_tasks=("semantic", "instance", "semantic"))
    torch.manual_seed(2)
    terms = objective(output, targets)
    torch.manual_seed(2)
    expected = sum(build_criterion(model.config, task, config)(
        output[task], select_targets(targets, output[task].samples)).total * len(output[task].samples) / 3
        for task in ("semantic", "instance"))
    assert "contrastive_loss" in terms and not any(name.startswith("panoptic/") for name in terms)
    torch.testing.assert_close(terms.total - terms["contrastive_loss"], expected)
    terms.total.backward()
    assert objective.text.loss.logit_scale.grad is not None and objective.text.loss.logit_scale.grad != 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.text.mapper.parameters())
    # the text side is the objective's, not the model's
    assert not any("mapper" in key or "logit_scale" in key for key in model.state_dict())


def test_texts_come_from_each_images_task_targets():
    model = oneformer_model()
    objective = build_objective(model.config, oneformer_config())
    images, targets = synthetic_batch(1, (65, 65))
    with torch.no_grad():
        output = model(images, sample_tasks=("instance",))
    seen = []
    objective.text.tokenizer = _Recording(objective.text.tokenizer, seen)
    with pytest.warns(UserWarning, match="global batch of one"):
        objective.text(output, targets)
    info = model.config.dataset
    texts = seen[0]
    assert len(texts) == 24 - 8
    assert all(text == "an instance photo" or any(info.class_names[c] in text for c in info.thing_classes)
               for text in texts)


class _Recording:
    def __init__(self, tokenizer, seen):
        self.tokenizer, self.seen = tokenizer, seen

    def __call__(self, texts):
        self.seen.append(list(texts))
        return self.tokenizer(texts)


def _config(out_dir, *extra):
    return oneformer_config(out_dir, "model.preset=oneformer_kmax_tiny_synth", "steps=2", "data.batch_size=2",
                            "optim.lr=1e-3", "loss.inst_disc_samples=64", *extra)


def _run(config, *, resume=False, sigterm_at=None):
    model = build_training_model(config)
    objective = build_objective(model.config, config)
    calls = []

    def interrupt(*_):
        calls.append(1)
        if len(calls) == sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
    objective.register_forward_pre_hook(interrupt)
    result = fit(config, model=model, objective=objective, train_set=build_train_set(config, model.config),
                 collate_fn=build_collate(model.config), resume=resume)
    return objective, result


def test_joint_training_trains_the_text_side_and_resumes_bit_identically(tmp_path):
    straight, result = _run(_config(tmp_path / "straight"))
    assert result.step == 2
    state = torch.load(tmp_path / "straight" / "last" / "training_state.pt", weights_only=True)
    assert "loss.logit_scale" in {k.split("text.")[-1] for k in state["objective"]}
    assert state["objective"]["text.loss.logit_scale"] != pytest.approx(torch.log(torch.tensor(1 / 0.07)).item())
    assert any(g["group_name"] == "objective/no_decay" for g in state["optimizer"]["param_groups"])
    logged = json.loads((tmp_path / "straight" / "scalars.jsonl").read_text().splitlines()[-1])
    assert "loss/contrastive_loss" in logged

    _, first = _run(_config(tmp_path / "resumed"), sigterm_at=1)
    assert first.step == 1
    resumed, second = _run(_config(tmp_path / "resumed"), resume=True)
    assert second.step == 2 and second.losses[-1] == result.losses[-1]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow  # ~30 s: three Python processes start and import torch
def test_joint_training_runs_under_two_gloo_ranks(tmp_path):
    sets = [item for setting in [*SMALL_TEXT, "data.workers=0", "progress=false", "tensorboard=false",
                                 "log_every=1", "loss.inst_disc_samples=64", "data.check=false"]
            for item in ("--set", setting)]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                          "-m", "polymax", "train", "--preset", "oneformer_kmax_tiny_synth", "--steps", "3",
                          "--batch-size", "4", "--out", str(tmp_path / "ddp"), *sets],
                         capture_output=True, text=True, timeout=300, env=_env())
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "ddp" / "scalars.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all("loss/contrastive_loss" in line for line in lines)
    state = torch.load(tmp_path / "ddp" / "last" / "training_state.pt", weights_only=True)
    assert len(state["rng"]) == 2 and "text.loss.logit_scale" in state["objective"]
