"""`polymax train` / `polymax eval` contract: DIR/last is a loadable model directory with the training state
beside it, eval reports PQ / SQ / RQ and mIoU as a table and JSON, bad input is a one-line UserError."""

from __future__ import annotations

import json
import os

import pytest
import torch

import polymax
from polymax.cli import main

TRAIN = ["train", "--preset", "kmax_tiny_test", "--steps", "2", "--batch-size", "2", "--set", "data.workers=0",
         "--set", "progress=false", "--set", "tensorboard=false"]


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--dataset", "synth"]) == 0
    assert "resolved training config" in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "training_state.pt", "train_config.yaml"):
        assert (out / "last" / name).is_file()
    assert isinstance(polymax.load_model(out / "last"), torch.nn.Module)
    assert torch.load(out / "last" / "training_state.pt", weights_only=True)["step"] == 2
    assert "steps: 2" in (out / "last" / "train_config.yaml").read_text()

    assert main(["eval", "--model", str(out / "last"), "--limit", "2", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff", "sq_things", "rq_stuff", "miou"):
        assert key in metrics
    assert main(["eval", "--model", str(out / "last"), "--limit", "1"]) == 0
    table = capsys.readouterr().out
    assert "PQ" in table and "things" in table and "stuff" in table and "miou" in table
    # The model as built gives the same metrics as the (default) optimised inference copy.
    assert main(["eval", "--model", str(out / "last"), "--limit", "2", "--json", "--no-optimise"]) == 0
    as_built = json.loads(capsys.readouterr().out)
    assert as_built == pytest.approx(metrics, abs=1e-4, nan_ok=True)

    # Continue the same run for one more step.
    assert main([*TRAIN, "--steps", "3", "--out", str(out), "--resume"]) == 0  # the last --steps wins
    assert torch.load(out / "last" / "training_state.pt", weights_only=True)["step"] == 3


@pytest.mark.parametrize("arguments, message", [
    (["--preset", "kmax_no_such_model"], "unknown preset"),
    (["--dataset", "coco_panoptic", "--data-root", "{tmp}/missing"], "does not exist"),
    (["--resume"], "no checkpoint"),
    (["--set", "optim.lr=fast"], "expects float"),
    (["--set", "model.tasks.depth.max_depth=20"], "no task 'depth'"),
    (["--set", "model.kmax_decoder.queries=4"], "unknown model field"),
])
def test_bad_input_is_a_one_line_user_error(tmp_path, capsys, arguments, message):
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    assert main([*TRAIN, "--out", str(tmp_path / "run"), *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_a_model_override_reaches_the_trained_model(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--set", "model.kmax_decoder.num_queries=4", "--print-config"]) == 0
    assert "kmax_decoder.num_queries: 4" in capsys.readouterr().out
    assert main([*TRAIN, "--steps", "1", "--out", str(out), "--set", "model.kmax_decoder.num_queries=4"]) == 0
    model = polymax.load_model(out / "last")
    assert model.config.kmax_decoder.num_queries == 4 and model.kmax_decoder.cluster_centres.shape[0] == 4
    assert "kmax_decoder.num_queries: 4" in (out / "last" / "train_config.yaml").read_text()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_dir_is_a_user_error(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main([*TRAIN, "--out", str(locked / "run")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_out_dir_that_is_a_file_is_a_user_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main([*TRAIN, "--out", str(tmp_path / "file" / "run")]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_existing_checkpoint_needs_resume(tmp_path, capsys):
    (tmp_path / "run" / "last").mkdir(parents=True)
    assert main([*TRAIN, "--out", str(tmp_path / "run")]) == 2
    assert "--resume" in capsys.readouterr().err


def test_eval_of_a_missing_model_is_a_user_error(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_print_config_shows_the_warm_up_chosen_for_the_run_and_no_progress(capsys):
    assert main(["train", "--preset", "kmax_tiny_test", "--steps", "30", "--no-progress", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("warm-up: 1 steps (1/30 of 30")
    assert "warmup_steps: 1\n" in out and "progress: false\n" in out
    assert main(["train", "--preset", "kmax_tiny_test", "--steps", "30", "--set", "optim.warmup_steps=12",
                 "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "warm-up:" not in out and "warmup_steps: 12\n" in out and "progress: true\n" in out
