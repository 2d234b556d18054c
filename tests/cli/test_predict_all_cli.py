"""`polymax predict --task all` (or `--task a,b`): every task's files under OUT/<task>/, named as one-task runs
name them; a wrong name or an exported graph is one line (exit 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import polymax
from polymax.cli import main

TASKS = ("panoptic", "semantic", "instance", "depth", "normals")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "multitask"
    polymax.save_pretrained(polymax.build_model("polymax_multitask_tiny_synth"), path)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "room.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (33, 40, 3), dtype=np.uint8)).save(path)
    return path


def _predict(photo, model_dir, out, task: str) -> int:
    return main(["predict", str(photo), "--model", str(model_dir), "--out", str(out), "--task", task,
                 "--resize", "none", "--no-progress"])


def test_all_tasks_write_each_tasks_files_in_its_folder(model_dir, photo, tmp_path):
    assert _predict(photo, model_dir, tmp_path / "all", "all") == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == sorted(TASKS)
    for task in TASKS:
        assert _predict(photo, model_dir, tmp_path / task, task) == 0
        alone = {p.name: p for p in (tmp_path / task).iterdir()}
        together = {p.name: p for p in (tmp_path / "all" / task).iterdir()}
        assert together.keys() == alone.keys() and alone, task
        for name in (n for n in alone if n.endswith(".png") and "color" not in n):    # the label / value maps
            assert np.array_equal(np.asarray(Image.open(together[name])), np.asarray(Image.open(alone[name])))


def test_a_list_of_tasks(model_dir, photo, tmp_path):
    assert _predict(photo, model_dir, tmp_path, "normals,depth") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depth", "normals"]
    assert (tmp_path / "depth" / "room_depth.png").is_file()


def _one_line_error(capsys, code: int, *fragments: str) -> None:
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_unknown_task_names_the_models_tasks(model_dir, photo, tmp_path, capsys):
    _one_line_error(capsys, _predict(photo, model_dir, tmp_path, "depth,edges"), "'edges'", *map(repr, TASKS))
    _one_line_error(capsys, _predict(photo, model_dir, tmp_path, ","), *map(repr, TASKS))
    assert not any(tmp_path.iterdir())


def test_an_onnx_graph_refuses_all(model_dir, photo, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    graph = tmp_path / "depth.onnx"
    assert main(["export", "onnx", "--model", str(model_dir), "--out", str(graph), "--task", "depth"]) == 0
    capsys.readouterr()
    code = main(["predict", str(photo), "--onnx", str(graph), "--out", str(tmp_path / "out"), "--task", "all"])
    _one_line_error(capsys, code, "one task", "--model", "--task NAME")
