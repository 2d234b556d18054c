"""One model, two tasks (semantic + depth on the synthetic rooms): it trains on both losses, evaluates, predicts,
exports each task to ONNX and reloads — end to end through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import polymax
from polymax.cli import main
from polymax.inference.predictor import Predictor
from polymax.structures import DepthResult, SegmentationResult

PRESET = "polymax_tiny_synth_semantic_depth"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    assert main(["train", "--preset", PRESET, "--steps", "6", "--batch-size", "4", "--out", str(out),
                 "--set", "data.workers=0", "--set", "progress=false", "--set", "tensorboard=false",
                 "--set", "data.crop_size=[33,33]", "--set", "optim.warmup_steps=0", "--set", "log_every=1"]) == 0
    return out


def test_it_trains_on_both_tasks(trained):
    model = polymax.load_model(trained / "last")
    assert model.tasks == ("semantic", "depth")
    assert model.kmax_decoder.cluster_centres.shape[0] == 6                 # semantic: K = C, the shared group
    assert model.kmax_decoder.task_centres["depth"].shape[0] == 16          # depth: its own group of bins
    names = set().union(*(json.loads(line) for line in (trained / "scalars.jsonl").read_text().splitlines()))
    assert any(n.startswith("loss/semantic/") for n in names) and any(n.startswith("loss/depth/") for n in names)


def test_it_evaluates_each_task(trained, capsys):
    for task, key in (("semantic", '"miou"'), ("depth", '"abs_rel"')):
        assert main(["eval", "--model", str(trained / "last"), "--task", task, "--limit", "2", "--json"]) == 0
        assert key in capsys.readouterr().out


def test_it_predicts_exports_and_reloads(trained, tmp_path):
    model = polymax.load_model(trained / "last")
    image = np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    semantic = Predictor(model, task="semantic").predict(image)
    depth = Predictor(model, task="depth").predict(image)
    assert isinstance(semantic, SegmentationResult) and semantic.semantic.shape == (30, 41)
    assert isinstance(depth, DepthResult) and depth.depth.shape == (30, 41)

    polymax.save_pretrained(model, tmp_path / "again")
    reloaded = polymax.load_model(tmp_path / "again")
    np.testing.assert_array_equal(Predictor(reloaded, task="depth").predict(image).depth, depth.depth)

    pytest.importorskip("onnxruntime")
    Image.fromarray(image).save(tmp_path / "room.png")
    for task in ("semantic", "depth"):
        graph = tmp_path / f"{task}.onnx"
        assert main(["export", "onnx", "--model", str(trained / "last"), "--out", str(graph), "--task", task]) == 0
        exported = Predictor.from_onnx(graph).predict(image)
        assert exported.task == task
    np.testing.assert_allclose(Predictor.from_onnx(tmp_path / "depth.onnx").predict(image).depth, depth.depth,
                               rtol=1e-3, atol=1e-3)
