"""`polymax eval --precision bf16|fp16 --compile` and the multi-process command
`torchrun --nproc_per_node N -m polymax eval ...` (rank 0 prints the metrics of the whole split)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import polymax
from polymax.cli import main
from polymax.data import build_dataset
from polymax.inference.evaluate import evaluate


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = polymax.build_model("polymax_tiny_synth_semantic")
    with torch.no_grad():    # a fresh model predicts almost one class everywhere: make its maps vary
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    path = tmp_path_factory.mktemp("models") / "semantic"
    polymax.save_pretrained(model, path)
    return path


def test_bf16_eval_runs_on_a_cpu_and_is_close_to_fp32():
    torch.manual_seed(0)
    model = polymax.build_model("polymax_tiny_synth_depth").eval()
    with torch.no_grad():    # a fresh model predicts almost one depth everywhere: make its maps vary
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    dataset = build_dataset("synth", split="val", size=(40, 48), num_samples=2)
    full = evaluate(model, dataset=dataset)
    half = evaluate(model, dataset=dataset, precision="bf16")
    assert half != full                                   # autocast did run in bf16
    # bf16 keeps ~3 significant digits; a depth map's errors move by about 1 % (measured 0.6 %).
    for key in ("rms", "abs_rel", "log10"):
        assert half[key] == pytest.approx(full[key], rel=0.02), key
    assert half["delta1"] == pytest.approx(full["delta1"], abs=0.02)
    assert 0.1 < full["delta1"] < 0.9


def test_precision_and_compile_reach_evaluate(model_dir, monkeypatch, capsys):
    seen = {}

    def fake_evaluate(model, **options):
        seen.update(options)
        return {"miou": 0.5}

    monkeypatch.setattr("polymax.inference.evaluate.evaluate", fake_evaluate)
    assert main(["eval", "--model", str(model_dir), "--precision", "fp16", "--compile", "--json", "--limit", "1"]) == 0
    assert seen["precision"] == "fp16" and seen["compile"] is True
    assert json.loads(capsys.readouterr().out) == {"miou": 0.5}
    with pytest.raises(SystemExit):                      # argparse: not one of the choices
        main(["eval", "--model", str(model_dir), "--precision", "fp8"])


@pytest.mark.slow  # torch.compile builds the graph and C++ kernels: ~5 min on two busy CPU cores
def test_compiled_eval_gives_the_eager_metrics(model_dir):
    model = polymax.load_model(model_dir)
    dataset = build_dataset("synth", split="val", size=(40, 48), num_samples=2)
    eager = evaluate(model, dataset=dataset, task="semantic")
    compiled = evaluate(model, dataset=dataset, task="semantic", compile=True)
    assert compiled["pixel_accuracy"] == pytest.approx(eager["pixel_accuracy"], abs=0.01)


def test_evaluate_rejects_an_unknown_precision(model_dir):
    with pytest.raises(polymax.errors.UserError, match="precision"):
        evaluate(polymax.load_model(model_dir), dataset=[], precision="int8")


@pytest.mark.slow  # ~20 s: three Python processes import torch
def test_torchrun_eval_on_two_processes_prints_the_one_process_metrics(model_dir):
    command = ["eval", "--model", str(model_dir), "--dataset", "synth", "--limit", "5", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}        # the same float32 arithmetic in every process
    single = subprocess.run([sys.executable, "-m", "polymax", *command], capture_output=True, text=True,
                            timeout=300, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                            "-m", "polymax", *command], capture_output=True, text=True, timeout=300, env=env)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    assert ranks.stdout.count("{") == 1                   # only rank 0 prints
    sharded, whole = json.loads(ranks.stdout), json.loads(single.stdout)
    assert sharded.keys() == whole.keys()
    for key, value in whole.items():                      # confusion-matrix counts: exact
        assert sharded[key] == value, key
