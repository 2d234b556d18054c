"""The decoder's query groups and task-conditioning hook, on the tiny kMaX trunk with several task heads.

A task with its own ``num_queries`` owns a group of centres (its own K, softmax and k-means argmax, one extra
decoder pass); tasks on the shared group share one pass. With ``kmax_decoder.task_conditioned`` the initial
centres depend on a learned task embedding, so every task gets its own pass and its own outputs.
"""

from __future__ import annotations

import pytest
import torch

from polymax.build import build_model
from polymax.config.model import TaskConfig
from polymax.data.synthetic import SYNTH_MAX_DEPTH, SYNTH_MIN_DEPTH
from polymax.presets import PRESETS

IMAGES = torch.rand(2, 3, 33, 33) * 255
SHARED_K, HIDDEN = 8, 32                      # kmax_tiny_test's kmax_decoder.num_queries and hidden


def _depth(num_queries: int = 0) -> TaskConfig:
    return TaskConfig(name="depth", num_queries=num_queries, aux_semantic="none", min_depth=SYNTH_MIN_DEPTH,
                      max_depth=SYNTH_MAX_DEPTH)


def _model(*tasks: TaskConfig, **overrides):
    return build_model("kmax_tiny_test", tasks=tasks, **overrides)


def _count_passes(model) -> list[str | None]:
    """Records the task of every kMaX decoder pass."""
    calls: list[str | None] = []
    model.kmax_decoder.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs.get("task")),
                                             with_kwargs=True)
    return calls


def test_a_task_with_its_own_num_queries_owns_its_centres_and_k():
    model = _model(TaskConfig(name="panoptic"), _depth(num_queries=5)).eval()
    decoder = model.kmax_decoder
    assert set(decoder.task_centres) == {"depth"} and decoder.task_centres["depth"].shape == (5, HIDDEN)
    assert decoder.cluster_centres.shape == (SHARED_K, HIDDEN)
    passes = _count_passes(model)
    with torch.no_grad():
        output = model(IMAGES, task=("panoptic", "depth"))
    assert sorted(passes) == ["depth", "panoptic"]           # one pass per group
    depth, panoptic = output["depth"], output["panoptic"]
    assert depth.final.mask_logits.shape[1] == depth.final.cluster_depth.shape[1] == 5
    assert all(aux.mask_logits.shape[1] == 5 for aux in depth.aux)
    assert panoptic.final.mask_logits.shape[1] == panoptic.final.class_logits.shape[1] == SHARED_K


def test_a_task_group_is_trained_by_its_own_task_only():
    model = _model(TaskConfig(name="panoptic", aux_semantic="none"), _depth(num_queries=5)).train()
    run = model(IMAGES, task="depth")["depth"]
    run.final.depth.mean().backward()
    decoder = model.kmax_decoder
    assert decoder.task_centres["depth"].grad is not None and decoder.task_centres["depth"].grad.abs().sum() > 0
    assert decoder.cluster_centres.grad is None


def test_tasks_on_the_shared_group_share_one_decoder_pass():
    model = _model(TaskConfig(name="panoptic"), _depth(), TaskConfig(name="normals", aux_semantic="none")).eval()
    assert len(model.kmax_decoder.task_centres) == 0
    passes = _count_passes(model)
    with torch.no_grad():
        output = model(IMAGES, task=model.tasks)
    assert len(passes) == 1
    logits = [output[task].final.mask_logits for task in model.tasks]
    assert all(torch.equal(logits[0], other) for other in logits[1:])
    assert output["normals"].final.normals.shape == (2, 3, 9, 9)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_task_conditioning_is_off_in_every_preset(name):
    assert PRESETS[name]().kmax_decoder.task_conditioned is False


def test_task_conditioning_is_off_in_a_built_preset():
    assert build_model("kmax_tiny_test").kmax_decoder.task_embedding is None


def test_task_conditioning_gives_each_task_its_own_pass_and_outputs():
    tasks = (_depth(), TaskConfig(name="normals", aux_semantic="none"))
    plain = _model(*tasks).eval()
    torch.manual_seed(0)
    conditioned = _model(*tasks, **{"kmax_decoder.task_conditioned": True}).eval()
    assert conditioned.kmax_decoder.task_embedding.weight.shape == (2, HIDDEN)
    passes = _count_passes(conditioned)
    with torch.no_grad():
        same = plain(IMAGES, task=("depth", "normals"))
        output = conditioned(IMAGES, task=("depth", "normals"))
    assert torch.equal(same["depth"].final.mask_logits, same["normals"].final.mask_logits)
    assert passes == ["depth", "normals"]
    assert not torch.allclose(output["depth"].final.mask_logits, output["normals"].final.mask_logits)


def test_the_task_embedding_learns_from_every_task():
    model = _model(_depth(), TaskConfig(name="normals", aux_semantic="none"),
                   **{"kmax_decoder.task_conditioned": True}).train()
    output = model(IMAGES, task=("depth", "normals"))
    (output["depth"].final.depth.mean() + output["normals"].final.normals[:, 0].mean()).backward()
    gradient = model.kmax_decoder.task_embedding.weight.grad
    assert gradient is not None and torch.isfinite(gradient).all()
    assert (gradient.abs().sum(dim=1) > 0).all()              # both tasks' rows
