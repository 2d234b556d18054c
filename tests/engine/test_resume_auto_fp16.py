"""--resume auto (continue when a checkpoint exists, start otherwise) and fp16 training with loss scaling."""

from __future__ import annotations

import math

import pytest
import torch

from polymax.cli import main
from polymax.config.train import load_config
from polymax.engine.train import train


def _config(out_dir, *extra, steps=1):
    return load_config(overrides=[
        "model.preset=kmax_tiny_test", f"steps={steps}", "data.batch_size=2", "data.workers=0", f"out_dir={out_dir}",
        "optim.warmup_steps=1", "loss.inst_disc_samples=64", "progress=false", "tensorboard=false",
        "data.check=false", *extra])


@pytest.mark.slow          # two short runs, ~4 s alone, longer on a shared machine
def test_resume_auto_starts_then_continues(tmp_path, capsys):
    first = train(_config(tmp_path, steps=1), resume="auto")
    assert first.step == 1 and (tmp_path / "last" / "training_state.pt").is_file()
    second = train(_config(tmp_path, steps=2), resume="auto")       # same command, longer: continues
    assert second.step == 2 and len(second.losses) == 1
    assert "resumed from" in capsys.readouterr().out
    state = torch.load(tmp_path / "last" / "training_state.pt", weights_only=True)
    assert state["step"] == 2 and state["grad_scaler"] == {}       # no scaler state outside fp16


def test_fp16_trains_with_a_loss_scale_that_is_checkpointed_and_restored(tmp_path):
    result = train(_config(tmp_path, "precision=fp16", steps=2))
    assert result.step == 2 and all(math.isfinite(loss) for loss in result.losses)
    state = torch.load(tmp_path / "last" / "training_state.pt", weights_only=True)
    scale = state["grad_scaler"]["scale"]
    assert scale > 0 and state["grad_scaler"]["_growth_tracker"] >= 0
    resumed = train(_config(tmp_path, "precision=fp16", steps=3), resume=True)
    assert resumed.step == 3
    log = (tmp_path / "log.txt").read_text()          # the run's history, appended across the resume
    assert log.count("resolved training config") == 2 and "resumed from" in log
    assert "step 2: loss " in log and "step 3: loss " in log and " INFO " in log


@pytest.mark.parametrize("value, ok", [("auto", True), ("later", False)])
def test_resume_flag_values(tmp_path, capsys, value, ok):
    code = main(["train", "--preset", "kmax_tiny_test", "--out", str(tmp_path), "--resume", value,
                 "--print-config"])
    assert code == (0 if ok else 2)
    if not ok:
        assert "--resume takes no value or 'auto', got 'later'" in capsys.readouterr().err
