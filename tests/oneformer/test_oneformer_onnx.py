"""One ONNX graph for the three OneFormer tasks: ``task`` is a graph input (an index into the graph's task list);
onnxruntime matches PyTorch for every task, and predict / serve feed the task asked for. Tasks that cannot share
a graph (own query centres, other heads) are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from oneformer_helpers import oneformer_model
from PIL import Image

import polymax
from polymax.cli import main
from polymax.errors import UserError
from polymax.inference.predictor import Predictor

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from polymax.export.onnx import METADATA_TASKS, OnnxRunner, export_onnx, task_input_tasks  # noqa: E402
from polymax.io.pretrained import save_pretrained  # noqa: E402

TOLERANCE = 1e-3   # as tests/export/test_onnx.py: max abs difference on logits allowed by the issue
TASKS = ("panoptic", "semantic", "instance")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return oneformer_model().eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model):
    """(graph path, what `polymax export onnx --task any --check` printed): one export for the whole module."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("onnx")
    save_pretrained(model, folder / "model")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", "onnx", "--model", str(folder / "model"), "--out", str(folder / "g.onnx"),
                     "--task", "any", "--check"]) == 0
    return folder / "g.onnx", printed.getvalue()


@pytest.fixture(scope="module")
def graph(exported):
    return exported[0]


def test_one_graph_answers_each_task_as_pytorch_does(graph, model):
    import onnx

    loaded = onnx.load(str(graph))
    metadata = {entry.key: entry.value for entry in loaded.metadata_props}
    assert json.loads(metadata[METADATA_TASKS]) == list(TASKS) and metadata["polymax_task"] == "any"
    assert [i.name for i in loaded.graph.input] == ["images", "task"]
    assert [o.name for o in loaded.graph.output] == ["mask_logits", "class_logits"]
    images = torch.rand(1, 3, 65, 65, generator=torch.Generator().manual_seed(3)) * 255
    answers = {}
    for task in TASKS:
        runner = OnnxRunner(graph, task=task)
        assert runner.task == task and runner.tasks == TASKS
        answers[task] = runner.run_arrays(images)
        with torch.no_grad():
            reference = model(images, task=task)[task].final
        for name, value in answers[task].items():
            assert float((value - getattr(reference, name)).abs().max()) <= TOLERANCE, (task, name)
    # The input matters: the three prompts give three answers (not one task's graph three times).
    assert float((answers["panoptic"]["class_logits"] - answers["instance"]["class_logits"]).abs().max()) > 1e-3
    assert float((answers["semantic"]["class_logits"] - answers["instance"]["class_logits"]).abs().max()) > 1e-3


def test_the_predictor_feeds_the_task_and_decodes_it(graph, model):
    image = np.random.default_rng(2).integers(0, 256, (23, 17, 3), dtype=np.uint8)
    from_onnx = Predictor.from_onnx(graph, task="instance")
    assert from_onnx.task == "instance" and from_onnx.runner.task == "instance"
    reference = Predictor(model, task="panoptic", optimise=False)
    for task in TASKS:
        expected = reference.predict(image, task=task)
        answer = from_onnx.predict(image, task=task)
        assert answer.task == task
        np.testing.assert_array_equal(answer.semantic, expected.semantic)
        if task != "semantic":
            assert [s.category for s in answer.segments] == [s.category for s in expected.segments]
    assert from_onnx.for_task("instance").runner.session is from_onnx.runner.session   # one session for all
    with pytest.raises(UserError, match="takes the task as an input: choose one of panoptic, semantic, instance"):
        Predictor.from_onnx(graph)
    with pytest.raises(UserError, match="not 'depth'"):
        OnnxRunner(graph, task="depth")


def test_predict_cli_with_task_runs_the_graph(tmp_path, graph, capsys):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    for task, expected in (("semantic", "a_semantic.png"), ("instance", "a_instances.json"),
                           ("panoptic", "a_segments.json")):
        assert main(["predict", str(tmp_path / "a.png"), "--onnx", str(graph), "--out", str(tmp_path / task),
                     "--task", task, "--no-progress"]) == 0
        assert (tmp_path / task / expected).is_file()
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "a.png"), "--onnx", str(graph), "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--task NAME" in err and len(err.strip().splitlines()) == 1


def test_serve_accepts_the_tasks_of_the_graph(graph):
    from polymax.serve.app import _requested_task, _task_selector

    predictor = Predictor.from_onnx(graph, task="semantic")
    assert _requested_task(predictor, "instance") == "instance"
    selector = _task_selector(predictor, None)
    assert all(f'value="{task}"' in selector for task in TASKS) and 'value="all"' not in selector
    with pytest.raises(UserError, match="one at a time"):
        _requested_task(predictor, "all")


def test_tasks_that_cannot_share_a_graph_are_refused(tmp_path):
    tokens = polymax.build_model("polymax_multitask_tiny_synth_tokens")
    assert task_input_tasks(tokens, "instance,panoptic,semantic") == TASKS     # one class head, the model's order
    with pytest.raises(UserError, match="different heads / outputs.*one graph per task"):
        export_onnx(tokens, tmp_path / "x.onnx", task="any")
    with pytest.raises(UserError, match="query centres of its own.*one graph per task"):
        export_onnx(polymax.build_model("polymax_multitask_tiny_synth"), tmp_path / "x.onnx", task="any")
    with pytest.raises(UserError, match="not chosen by a task token.*one graph per task"):
        export_onnx(polymax.build_model("kmax_tiny_test"), tmp_path / "x.onnx", task="any")
    assert not (tmp_path / "x.onnx").exists()


def test_export_cli_task_any_prints_the_index_and_checks_each_task(exported):
    out = exported[1]
    assert "task int64 scalar (0 = panoptic, 1 = semantic, 2 = instance)" in out
    lines = [line for line in out.splitlines() if "max abs difference" in line]
    assert [line.split("(")[1].split(")")[0] for line in lines] == list(TASKS)
    values = [float(word.rstrip(",")) for line in lines for word in line.split("difference:")[1].split()[1::2]]
    assert len(values) == 6 and max(values) <= TOLERANCE


@pytest.mark.slow   # the dynamo exporter takes ~30 s for the tiny model
def test_the_dynamo_exporter_writes_the_task_input_graph_too(tmp_path, model):
    pytest.importorskip("onnxscript")
    result = export_onnx(model, tmp_path / "dynamo.onnx", task="any", exporter="dynamo")
    images = torch.rand(1, 3, 65, 65, generator=torch.Generator().manual_seed(5)) * 255
    for task in TASKS:
        exported = OnnxRunner(result.path, task=task).run_arrays(images)
        with torch.no_grad():
            reference = model(images, task=task)[task].final
        assert all(float((value - getattr(reference, name)).abs().max()) <= TOLERANCE
                   for name, value in exported.items()), task
