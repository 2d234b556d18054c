"""`polymax demo`: a reduced run learns (beats the trivial baselines on held-out rooms) and writes its
outputs; bad options fail with one line; the quick and the default demo (slow) beat every baseline and meet the
quality floors (the quick one all but PQ things)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import polymax
from polymax.config.train import load_config
from polymax.tools.demo import HEADLINE, beats_trivial, run_demo, settings_for, summary_table


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the demo's default: tiny tensors run faster on one thread
    yield
    torch.set_num_threads(threads)


def _check_outputs(out, reports, *, compare=False):
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {r.task for r in reports}
    for report in reports:
        entry = metrics[report.task]
        assert set(entry) == ({"model", "trivial", "single"} if compare else {"model", "trivial"})
        for name, _ in HEADLINE[report.task]:
            assert isinstance(entry["model"][name], float) and isinstance(entry["trivial"][name], float)
        assert (out / f"{report.task}.png").stat().st_size > 1000
    assert (out / "demo.png").stat().st_size > 1000
    assert polymax.load_model(out / "model").config.task_names == tuple(r.task for r in reports)


def test_reduced_demo_learns_in_one_model(tmp_path):
    # 60 steps of one model for two tasks: semantic and the normals' mean angle already clearly beat the constant
    # predictors (mIoU ≈ 0.2 vs 0.09, mean angle ≈ 45° vs 68° in our runs); the rest needs the full quick demo.
    settings = settings_for(quick=True, steps_scale=0.2)
    reports = run_demo(tmp_path, settings=settings, tasks=("semantic", "normals"), progress=False)
    _check_outputs(tmp_path, reports)
    semantic, normals = reports
    assert semantic.model["miou"] > 1.5 * semantic.trivial["miou"]
    assert normals.model["mean"] < normals.trivial["mean"]
    # The quick recipe: the rooms as rendered, the randomly initialised backbone at the full learning rate.
    saved = load_config(tmp_path / "runs" / "quick" / "joint" / "last" / "train_config.yaml")
    assert not saved.augment.enabled and saved.optim.backbone_lr_multiplier == 1.0
    assert not settings_for(quick=False).augment and settings_for(quick=False).backbone_lr_multiplier == 1.0


def test_compare_adds_the_single_task_models(tmp_path):
    # A panoptic-only model trains OneFormer's query-text loss (every task reads the task-guided group).
    settings = settings_for(quick=True, steps_scale=0.01)
    reports = run_demo(tmp_path, settings=settings, tasks=("panoptic", "depth"), progress=False, compare=True)
    _check_outputs(tmp_path, reports, compare=True)
    for task in ("panoptic", "depth"):
        assert (tmp_path / "runs" / "quick" / f"single_{task}" / "last").is_dir()
    assert "single-task" in summary_table(reports)


def _check_floors(reports) -> None:
    """The issue's quality floors, all but PQ things (the caller's)."""
    assert all(beats_trivial(r) for r in reports.values()), [(r.task, r.model, r.trivial) for r in reports.values()]
    assert reports["semantic"].model["miou"] >= 0.35
    assert reports["depth"].model["abs_rel"] <= 0.17
    assert reports["normals"].model["mean"] <= 35
    assert reports["panoptic"].model["pq"] >= 0.25


@pytest.mark.slow
def test_quick_demo_meets_the_floors_with_one_model(tmp_path):
    reports = {r.task: r for r in run_demo(tmp_path, settings=settings_for(quick=True), progress=False)}
    _check_outputs(tmp_path, list(reports.values()))
    _check_floors(reports)
    if reports["panoptic"].model["pq_things"] < 0.10:   # the target; 0.073-0.099 over five seeds
        pytest.xfail("issue 19: the quick demo's PQ things is under 0.10 (the 300-step model names no spheres; "
                     "docs/multitask.md)")


@pytest.mark.slow  # ~5 min
def test_default_demo_meets_every_floor_with_one_model(tmp_path):
    reports = {r.task: r for r in run_demo(tmp_path, settings=settings_for(quick=False), mode="full",
                                           progress=False)}
    _check_floors(reports)
    assert reports["panoptic"].model["pq_things"] >= 0.10


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "polymax", "demo", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args, needle", [
    (["--tasks", "semantic,teleport"], "teleport"),
    (["--size", "64"], "--size"),
    (["--steps-scale", "0"], "--steps-scale"),
    (["--threads", "0"], "--threads"),
])
def test_bad_options_fail_with_one_line(tmp_path, args, needle):
    result = _cli("--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = _cli("--out", str(blocker / "sub"), "--tasks", "semantic")
    assert result.returncode == 2 and "cannot write" in result.stderr and "Traceback" not in result.stderr


def test_two_runs_write_identical_metrics(tmp_path):
    """Seeded, one thread, deterministic algorithms: the same machine gives the same metrics.json byte for byte."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(polymax.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    written = []
    for run in ("a", "b"):
        out = tmp_path / run
        result = subprocess.run([sys.executable, "-m", "polymax", "demo", "--quick", "--steps-scale", "0.05",
                                 "--tasks", "semantic", "--out", str(out), "--no-progress"],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "Warning" not in result.stderr, result.stderr
        written.append((out / "metrics.json").read_bytes())
    assert written[0] == written[1]
