"""keep_best: OUT/best/ holds the checkpoint of the best evaluation so far (min / max / auto), OUT/best.json says
which, a resumed run remembers it, and the misuses end with one line before any training step."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import polymax
from polymax.config.train import best_mode, load_config
from polymax.data import build_dataset
from polymax.engine.assemble import build_collate, build_training_model
from polymax.engine.best import BestCheckpoint, BestRecord, read_best
from polymax.engine.checkpoint import remove_interrupted_saves
from polymax.engine.objective import build_objective
from polymax.engine.sampler import SeededDataset
from polymax.engine.train import fit
from polymax.errors import UserError


def scripted(values, key="pq"):
    """A fake evaluate_fn reporting the next of ``values`` as ``key`` (and another metric beside it)."""
    calls = iter(values)

    def evaluate_fn(model):
        return {key: next(calls), "other": 0.0}
    return evaluate_fn


def run(out_dir, steps, *extra, evaluate_fn, resume=False):
    """kmax_tiny_test on 2 synthetic scenes, no augmentation, evaluated (by ``evaluate_fn``) after every step."""
    config = load_config(overrides=[
        "model.preset=kmax_tiny_test", f"steps={steps}", "data.batch_size=2", "data.workers=0", f"out_dir={out_dir}",
        "optim.warmup_steps=0", "optim.lr=3e-3", "augment.enabled=false", "progress=false", "tensorboard=false",
        "eval_every=1", "checkpoint_every=0", *extra])
    model = build_training_model(config)
    scenes = build_dataset("synth", split="train", size=tuple(model.config.crop_size), num_samples=2)
    return fit(config, model=model, objective=build_objective(model.config, config), train_set=SeededDataset(scenes),
               collate_fn=build_collate(model.config), evaluate_fn=evaluate_fn, resume=resume)


def saved_step(directory) -> int:
    return torch.load(directory / "training_state.pt", weights_only=True)["step"]


def test_best_holds_the_step_of_the_highest_value(tmp_path):
    run(tmp_path, 4, "keep_best=pq", evaluate_fn=scripted([0.2, 0.5, 0.4, 0.3]))
    assert json.loads((tmp_path / "best.json").read_text()) == {"metric": "pq", "mode": "max", "value": 0.5, "step": 2}
    assert saved_step(tmp_path / "best") == 2 and saved_step(tmp_path / "last") == 4
    model = polymax.load_model(tmp_path / "best")            # a model folder like last/
    best = load_file(str(tmp_path / "best" / "model.safetensors"))
    assert all(torch.equal(best[name], value) for name, value in model.state_dict().items())
    last = load_file(str(tmp_path / "last" / "model.safetensors"))
    assert any(not torch.equal(best[name], last[name]) for name in best)
    assert (tmp_path / "best" / "train_config.yaml").is_file()
    assert not list(tmp_path.glob(".*tmp-*")) and not (tmp_path / "best.previous").exists()


def judge(out_dir, metric, mode, values, *, resume=False):
    """Feed ``values`` to a BestCheckpoint as evaluations at steps 1, 2, ...; the steps it saved."""
    best, saved = BestCheckpoint(out_dir, metric=metric, mode=mode, resume=resume), []
    for step, value in enumerate(values, start=1):
        if best.improved({metric: value, "other": 0.0}):
            best.saved(step)
            saved.append(step)
    return saved


def test_error_metrics_of_a_task_are_minimised_and_modes_can_be_forced(tmp_path):
    assert best_mode("depth/abs_rel", "auto") == "min" and best_mode("normals/mean", "auto") == "min"
    assert best_mode("depth/delta1", "auto") == "max" and best_mode("abs_rel", "max") == "max"
    assert judge(tmp_path, "depth/abs_rel", "auto", [0.5, 0.3, 0.4, 0.2]) == [1, 2, 4]
    assert read_best(tmp_path) == BestRecord(metric="depth/abs_rel", mode="min", value=0.2, step=4)
    assert judge(tmp_path, "pq", "min", [0.5, 0.6, 0.1]) == [1, 3]
    assert judge(tmp_path, "rms", "max", [0.5, 0.6, 0.1]) == [1, 2]


def test_nan_and_ties_never_replace_the_best(tmp_path):
    assert judge(tmp_path, "pq", "auto", [float("nan"), 0.4, 0.4, float("nan"), 0.41]) == [2, 5]


def test_the_remembered_best_needs_resume_and_the_same_metric_and_mode(tmp_path):
    judge(tmp_path, "pq", "auto", [0.9])
    assert judge(tmp_path, "pq", "auto", [0.5, 0.95], resume=True) == [2]
    assert judge(tmp_path, "pq", "auto", [0.5]) == [1]                       # a fresh run starts afresh
    assert judge(tmp_path, "pq", "min", [0.7], resume=True) == [1]           # so does another mode
    assert judge(tmp_path, "other", "auto", [0.0], resume=True) == [1]       # or another metric
    (tmp_path / "best.json").write_text("{not json")
    assert judge(tmp_path, "pq", "auto", [0.1], resume=True) == [1]          # unreadable: rewritten


def test_resume_remembers_the_best_value(tmp_path):
    run(tmp_path, 2, "keep_best=abs_rel", evaluate_fn=scripted([0.2, 0.5], "abs_rel"))
    run(tmp_path, 4, "keep_best=abs_rel", evaluate_fn=scripted([0.4, 0.15], "abs_rel"), resume=True)
    assert json.loads((tmp_path / "best.json").read_text()) == {"metric": "abs_rel", "mode": "min", "value": 0.15,
                                                               "step": 4}
    assert saved_step(tmp_path / "best") == 4       # not step 3 (0.4 > 0.2 remembered from the first run)


def test_an_unknown_metric_names_the_available_ones_at_the_first_evaluation(tmp_path):
    with pytest.raises(UserError, match=r"no metric 'pqq'; it reports pq, other") as error:
        run(tmp_path, 3, "keep_best=pqq", evaluate_fn=scripted([0.1, 0.2, 0.3]))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "last").exists()        # stopped at step 1, before its checkpoint


@pytest.mark.parametrize("extra, evaluate, message", [
    (["eval_every=0"], True, "needs periodic evaluation: set eval_every"),
    ([], False, "needs evaluation data"),
])
def test_keep_best_without_evaluation_fails_before_the_first_step(tmp_path, extra, evaluate, message):
    with pytest.raises(UserError, match=message):
        run(tmp_path, 2, "keep_best=pq", *extra, evaluate_fn=scripted([0.1, 0.2]) if evaluate else None)
    assert not (tmp_path / "scalars.jsonl").exists() and not (tmp_path / "last").exists()


def test_bad_mode_is_a_config_error():
    with pytest.raises(UserError, match="keep_best_mode must be one of auto, min, max"):
        load_config(overrides=["keep_best_mode=lowest"])


def test_interrupted_best_saves_are_cleaned_up(tmp_path):
    (tmp_path / ".best.tmp-123").mkdir()
    (tmp_path / ".best.json.tmp-123").write_text("{")
    (tmp_path / ".last.tmp-9").mkdir()
    (tmp_path / ".keep.tmp-1").write_text("not ours")
    remove_interrupted_saves(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [".keep.tmp-1"]


TRAIN = ["train", "--preset", "kmax_tiny_test", "--steps", "2", "--batch-size", "2", "--set", "data.workers=0",
         "--set", "progress=false", "--set", "tensorboard=false"]


def test_the_cli_flag_and_set_reach_the_config(tmp_path, capsys):
    from polymax.cli import main

    assert main([*TRAIN, "--out", str(tmp_path), "--keep-best", "delta1", "--print-config"]) == 0
    assert "keep_best: delta1\nkeep_best_mode: auto\n" in capsys.readouterr().out
    assert main([*TRAIN, "--out", str(tmp_path), "--set", "keep_best=depth/abs_rel", "--set", "keep_best_mode=max",
                 "--print-config"]) == 0
    assert "keep_best: depth/abs_rel\nkeep_best_mode: max\n" in capsys.readouterr().out


def test_the_cli_checks_the_metric_name_before_training(tmp_path, capsys):
    from polymax.cli import main

    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--keep-best", "abs_rel", "--set", "eval_every=1"]) == 2
    error = capsys.readouterr().err.strip()
    assert "no metric 'abs_rel'; it reports pq, sq, rq," in error and "miou" in error and "\n" not in error
    assert not (out / "last").exists() and not (out / "scalars.jsonl").exists()


@pytest.mark.slow  # ~30 s: two gloo ranks start and import torch
def test_two_ranks_agree_and_rank_zero_writes_the_best(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m", "polymax",
               *TRAIN, "--batch-size", "4", "--out", str(out), "--keep-best", "miou", "--set", "eval_every=1",
               "--set", "eval_batches=1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "best.json").read_text())
    state = torch.load(out / "best" / "training_state.pt", weights_only=True)
    assert record["metric"] == "miou" and state["step"] == record["step"] and len(state["rng"]) == 2
    polymax.load_model(out / "best")
