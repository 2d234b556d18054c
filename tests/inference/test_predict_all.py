"""``task="all"`` / a tuple of tasks: one MultiTaskResult per image, equal to the per-task results, from ONE model
call per batch (the trunk is shared); exported graphs (one task each) refuse it in one line."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch
from polymax_task_helpers import OneTaskGraph

from polymax.build import build_model
from polymax.errors import UserError
from polymax.inference.predictor import Predictor
from polymax.structures import MultiTaskResult, Result

TASKS = ("panoptic", "semantic", "instance", "depth", "normals")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("polymax_multitask_tiny_synth").eval()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (33, 40, 3), dtype=np.uint8) for _ in range(3)]


def _assert_same(one: Result, other: Result) -> None:
    assert type(one) is type(other) and one.task == other.task and one.size == other.size
    for item in fields(one):
        a, b = getattr(one, item.name), getattr(other, item.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"{one.task}.{item.name}")
        elif item.name != "segments":          # scores are floats: compared below
            assert a == b, f"{one.task}.{item.name}"
    for x, y in zip(getattr(one, "segments", None) or [], getattr(other, "segments", None) or []):
        assert (x.id, x.panoptic_id, x.area, x.bbox) == (y.id, y.panoptic_id, y.area, y.bbox)
        assert x.score == pytest.approx(y.score, abs=1e-5)


def test_all_tasks_equal_the_single_task_results(model, images):
    predictor = Predictor(model, resize="none", batch_size=2, task="depth")
    together = predictor.predict_batch(images, task="all", probabilities=True)
    assert [type(r) for r in together] == [MultiTaskResult] * 3
    assert all(r.tasks == TASKS and r.size == (33, 40) for r in together)
    for task in TASKS:
        alone = predictor.predict_batch(images, task=task, probabilities=True)
        for answer, single in zip(together, alone):
            _assert_same(answer[task], single)


def test_oneformer_tasks_share_one_call_too(images):
    torch.manual_seed(0)
    model = build_model("oneformer_kmax_tiny_synth").eval()      # task-guided centres: one decoder pass per task
    predictor = Predictor(model, task="all", resize="none", batch_size=3)
    together = predictor.predict_batch(images)
    assert together[0].tasks == ("panoptic", "semantic", "instance")
    for task in together[0]:
        for answer, single in zip(together, predictor.predict_batch(images, task=task)):
            _assert_same(answer[task], single)


def test_one_model_call_per_batch(model, images):
    calls: list[object] = []
    handle = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs.get("task")),
                                             with_kwargs=True)
    try:   # optimise=False: the runner calls the model itself, so the hook sees every call
        predictor = Predictor(model, task="all", resize="none", batch_size=2, optimise=False)
        assert predictor.tasks == TASKS
        predictor.predict_batch(images)                             # 3 images, batches of 2 → 2 calls
        assert calls == [TASKS, TASKS]
        calls.clear()
        answer = predictor.predict(images[0], task=["normals", "depth", "normals"])
        assert calls == [("depth", "normals")] and answer.tasks == ("depth", "normals")   # the model's order
    finally:
        handle.remove()


def test_single_task_calls_are_unchanged(model, images):
    predictor = Predictor(model, task="all", resize="none")
    assert isinstance(predictor.predict(images[0]), MultiTaskResult)
    depth = predictor.predict(images[0], task="depth")
    assert not isinstance(depth, MultiTaskResult) and depth.task == "depth"
    assert Predictor(model, task="semantic", resize="none").predict(images[0]).task == "semantic"


def test_unknown_task_names_the_models_tasks(model, images):
    with pytest.raises(UserError, match="normals"):
        Predictor(model, task=("depth", "edges"))
    predictor = Predictor(model, task="depth", resize="none")
    with pytest.raises(UserError, match="'edges'.*'panoptic'"):
        predictor.predict(images[0], task=("edges",))


def test_an_exported_graph_says_what_to_do_instead(model, images):
    graph = OneTaskGraph(model.config, "depth")
    for make in (lambda: Predictor(graph, task="all"),
                 lambda: Predictor(graph).predict(images[0], task=("depth", "normals"))):
        with pytest.raises(UserError) as error:
            make()
        message = str(error.value)
        assert "\n" not in message and "--model" in message and "--task NAME" in message
