"""`--task NAME` on predict / eval / export: the default is the model's only task; a model with several tasks
needs one, and a wrong or missing name is one line that lists the choices (exit 2)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import polymax
from polymax.cli import main
from polymax.config.model import TaskConfig
from polymax.data.synthetic import SYNTH_MAX_DEPTH, SYNTH_MIN_DEPTH
from polymax.presets import PRESETS


@pytest.fixture(scope="module")
def two_task_dir(tmp_path_factory):
    """Semantic (K = C on the shared group) + depth (16 bins of its own) on the tiny synthetic trunk."""
    torch.manual_seed(0)
    base = PRESETS["polymax_tiny_synth_semantic"]()
    depth = TaskConfig(name="depth", num_queries=16, aux_semantic="none", min_depth=SYNTH_MIN_DEPTH,
                       max_depth=SYNTH_MAX_DEPTH)
    config = replace(base, preset="semantic_depth", tasks=(*base.tasks, depth))
    path = tmp_path_factory.mktemp("models") / "two_tasks"
    polymax.save_pretrained(polymax.build_model(config), path)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "room.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(path)
    return path


def _one_line_error(capsys, code: int, *fragments: str) -> None:
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_predict_needs_a_task_on_a_two_task_model(two_task_dir, photo, tmp_path, capsys):
    code = main(["predict", str(photo), "--model", str(two_task_dir), "--out", str(tmp_path / "out")])
    _one_line_error(capsys, code, "'semantic'", "'depth'", "--task")
    code = main(["predict", str(photo), "--model", str(two_task_dir), "--out", str(tmp_path / "out"),
                 "--task", "normals"])
    _one_line_error(capsys, code, "normals", "'semantic'", "'depth'")


def test_predict_runs_the_chosen_task(two_task_dir, photo, tmp_path):
    for task, expected in (("depth", {"room_depth.png", "room_depth_color.png"}),
                           ("semantic", {"room_semantic.png", "room_semantic_color.png"})):
        out = tmp_path / task
        assert main(["predict", str(photo), "--model", str(two_task_dir), "--out", str(out), "--task", task,
                     "--no-progress"]) == 0
        assert {p.name for p in out.iterdir()} == expected


def test_eval_reports_the_chosen_task(two_task_dir, capsys):
    assert main(["eval", "--model", str(two_task_dir), "--task", "depth", "--limit", "2", "--json"]) == 0
    assert '"abs_rel"' in capsys.readouterr().out
    code = main(["eval", "--model", str(two_task_dir), "--limit", "2"])
    _one_line_error(capsys, code, "'semantic'", "'depth'")


def test_export_one_task_and_predict_from_the_graph(two_task_dir, photo, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    graph = tmp_path / "depth.onnx"
    assert main(["export", "onnx", "--model", str(two_task_dir), "--out", str(graph), "--task", "depth"]) == 0
    assert "depth" in capsys.readouterr().out
    out = tmp_path / "onnx_out"
    assert main(["predict", str(photo), "--onnx", str(graph), "--out", str(out), "--no-progress"]) == 0
    assert (out / "room_depth.png").is_file() and not (out / "room_semantic.png").exists()
    code = main(["predict", str(photo), "--onnx", str(graph), "--out", str(out), "--task", "semantic"])
    _one_line_error(capsys, code, "depth", "semantic")
    code = main(["export", "onnx", "--model", str(two_task_dir), "--out", str(tmp_path / "x.onnx")])
    _one_line_error(capsys, code, "'semantic'", "'depth'")
