"""``polymax bench`` reports every figure it promises, with consistent values (timings are never asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from polymax.build import build_model
from polymax.cli import main
from polymax.config.model import TaskConfig
from polymax.tools.analysis import count_flops, count_parameters
from polymax.tools.bench import BenchSettings, run_benchmark, synthetic_targets

REQUIRED = ("params", "flops", "latency_ms_median", "latency_ms_min", "latency_ms_max", "throughput_per_s",
            "peak_memory_mb", "matmul_gflops", "achieved_fraction")


def _check_sane(result: dict, *, batch: int) -> None:
    for key in REQUIRED:
        assert key in result, key
        assert isinstance(result[key], (int, float)) and result[key] > 0, (key, result[key])
    assert result["latency_ms_min"] <= result["latency_ms_median"] <= result["latency_ms_max"]
    assert result["throughput_per_s"] == pytest.approx(1000 * batch / result["latency_ms_median"])
    gflops = result["flops"] / 1e9 / (result["latency_ms_median"] / 1000)
    assert result["achieved_fraction"] == pytest.approx(gflops / result["matmul_gflops"])
    assert len(result["latency_ms_all"]) == result["repeats"]
    assert result["machine"]["cpu_cores"] >= 1 and result["machine"]["cpu"]


def test_cli_json_reports_every_required_key(capsys) -> None:
    code = main(["bench", "--preset", "kmax_tiny_test", "--size", "65", "--repeats", "2", "--warmup", "1",
                 "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    _check_sane(result, batch=1)
    model = build_model("kmax_tiny_test")
    assert result["params"] == count_parameters(model, inference=True)
    assert result["flops"] == count_flops(model, (65, 65))         # counted, the same way as analysis
    assert result["size"] == [65, 65] and result["device"] == "cpu" and not result["train"]


def test_training_step_counts_forward_and_backward() -> None:
    settings = dict(preset="kmax_tiny_test", size=(65, 81), batch=2, repeats=1, warmup=1, matmul_size=256)
    inference = run_benchmark(BenchSettings(**settings))
    training = run_benchmark(BenchSettings(**settings, train=True))
    _check_sane(training, batch=2)
    assert training["train"] and training["size"] == [65, 81]
    # Backward costs about twice the forward; training also runs the auxiliary semantic branch.
    assert training["flops"] > 2 * inference["flops"]
    assert training["params"] > inference["params"]                 # + the training-only semantic branch


def test_fast_inference_options_run_and_report() -> None:
    result = run_benchmark(BenchSettings(preset="kmax_tiny_test", size=(65, 65), repeats=1, warmup=1, fold=True,
                                         channels_last=True, dtype="bf16", matmul_size=256))
    _check_sane(result, batch=1)
    unfolded = count_parameters(build_model("kmax_tiny_test"), inference=True)
    assert result["params"] == unfolded                              # counted before folding adds biases
    assert result["fold"] and result["channels_last"] and result["dtype"] == "bf16"


def test_fused_inference_counts_the_same_flops_and_reports_it(capsys) -> None:
    code = main(["bench", "--preset", "kmax_tiny_test", "--size", "65", "--repeats", "1", "--warmup", "1",
                 "--fuse", "--channels-last", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    _check_sane(result, batch=1)
    assert result["fuse"] and result["fold"]                         # --fuse folds first
    assert result["flops"] == count_flops(build_model("kmax_tiny_test"), (65, 65))
    assert isinstance(result["machine"]["malloc_keeps_freed_memory"], bool)


@pytest.mark.parametrize("argv, message", [
    (["--fold", "--train"], "inference only"),
    (["--fuse", "--train"], "inference only"),
    (["--fuse", "--compile"], "eager CPU path"),
    (["--size", "65", "65", "65"], "H or H W"),
    (["--preset", "kmax_r5O_coco"], "unknown preset"),
])
def test_user_mistakes_are_one_line_errors(argv, message, capsys) -> None:
    assert main(["bench", "--preset", "kmax_tiny_test", "--size", "65", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(capsys) -> None:
    assert main(["bench", "--preset", "kmax_tiny_test", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_synthetic_targets_follow_the_task() -> None:
    info = build_model("kmax_tiny_test").config.dataset
    panoptic = synthetic_targets(build_model("kmax_tiny_test"), 2, (33, 40), torch.device("cpu"))
    assert panoptic.semantic.shape == (2, 33, 65)                    # the padded (32k+1) size
    assert panoptic.semantic[:, :, :40].unique().numel() > 1
    assert (panoptic.semantic[:, :, 40:] == info.ignore_label).all()  # the padding is void
    divisor = info.label_divisor
    things = panoptic.panoptic[torch.isin(panoptic.semantic, torch.tensor(info.thing_classes))]
    assert (things % divisor > 0).all()                              # thing pixels carry an instance id
    depth = synthetic_targets(build_model("polymax_tiny_synth_depth"), 1, (17, 17), torch.device("cpu"))
    assert depth.depth.shape == (1, 33, 33) and depth.depth[:, :17, :17].min() > 0 and depth.semantic is None
    assert depth.depth[:, 17:].max() == 0


def _semantic_and_depth() -> dict:
    """Overrides giving the tiny synthetic semantic model a second, depth head (16 queries of its own)."""
    semantic = build_model("polymax_tiny_synth_semantic").config.task("semantic")
    depth = TaskConfig(name="depth", num_queries=16, aux_semantic="none", min_depth=0.5, max_depth=4.0)
    return {"tasks": (semantic, depth)}


def test_two_task_model_gets_the_labels_of_both_and_is_measured_whole() -> None:
    overrides = _semantic_and_depth()
    model = build_model("polymax_tiny_synth_semantic", **overrides)
    targets = synthetic_targets(model, 1, (65, 65), torch.device("cpu"))
    assert targets.semantic is not None and targets.panoptic is not None and targets.normals is None
    assert targets.depth.min() > 0.5 and targets.depth.max() < 4.0           # the depth task's own range
    both = count_flops(model, (65, 65))
    assert both > count_flops(model, (65, 65), task="semantic") and both > count_flops(model, (65, 65), task="depth")
    result = run_benchmark(BenchSettings(preset="polymax_tiny_synth_semantic", size=(65, 65), repeats=1, warmup=1,
                                         train=True, matmul_size=256, overrides=overrides))
    _check_sane(result, batch=1)
    assert result["flops"] > 2 * both                                        # forward and backward of both tasks
