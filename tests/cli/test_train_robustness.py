"""`polymax train` faults: a full disk, a changed recipe on --resume, bad data before step 1 and mid-run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from polymax.cli import main
from polymax.engine import checkpoint as ckpt

TRAIN = ["train", "--preset", "kmax_tiny_test", "--batch-size", "2", "--set", "data.workers=0",
         "--set", "progress=false", "--set", "tensorboard=false"]


def _step(out) -> int:
    return torch.load(out / "last" / "training_state.pt", weights_only=True)["step"]


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save, calls = ckpt.torch.save, []

    def save(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save)
    assert main([*TRAIN, "--steps", "2", "--set", "checkpoint_every=1", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert str(out) in error and "No space left" in error and len(error.splitlines()) == 1
    assert _step(out) == 1
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_a_log_write_error_is_one_line(tmp_path, capsys, monkeypatch):
    from polymax.engine import reporting

    def full(self, step, values):
        raise OSError(28, "No space left on device", "scalars.jsonl")

    monkeypatch.setattr(reporting.ScalarLog, "scalars", full)
    out = tmp_path / "run"
    assert main([*TRAIN, "--steps", "1", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert str(out) in error and "No space left" in error and len(error.splitlines()) == 1


def test_resume_with_a_changed_recipe_is_refused_unless_allowed(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--steps", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    changed = [*TRAIN, "--batch-size", "4", "--set", "optim.lr=0.5", "--steps", "2", "--out", str(out), "--resume"]
    assert main(changed) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--allow-config-change" in error
    assert "data.batch_size 2 → 4" in error and "optim.lr" in error and "steps" not in error.replace("--", "")
    assert _step(out) == 1
    assert main([*changed, "--allow-config-change"]) == 0
    assert "data.batch_size 2 → 4" in capsys.readouterr().out
    assert _step(out) == 2
