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


def _depth_folder(root, bad_stem: str | None = None, count: int = 4):
    """A small depth-only folder data set; ``bad_stem``'s depth PNG is truncated."""
    for name in ("images", "depth"):
        (root / name).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        stem = f"s{index}"
        Image.fromarray(rng.integers(0, 256, (33, 33, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(np.full((33, 33), 2000, dtype=np.uint16)).save(root / "depth" / f"{stem}.png")
    if bad_stem is not None:
        path = root / "depth" / f"{bad_stem}.png"
        path.write_bytes(path.read_bytes()[:60])
    (root / "dataset.yaml").write_text("depth_scale: 0.001\nmax_depth: 8.0\n")
    return root


DEPTH = ["train", "--preset", "polymax_tiny_synth_depth", "--dataset", "folder", "--batch-size", "2", "--steps", "4",
         "--set", "data.workers=0", "--set", "progress=false", "--set", "tensorboard=false",
         "--set", "data.crop_size=[33,33]", "--set", "eval_every=0"]


def test_bad_data_is_found_before_step_1(tmp_path, capsys):
    data = _depth_folder(tmp_path / "data", bad_stem="s2")
    out = tmp_path / "run"
    assert main([*DEPTH, "--data-root", str(data), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "s2.png" in error and "--skip-data-check" in error
    assert not (out / "last").exists()


def test_a_bad_sample_mid_training_is_one_line_and_leaves_a_checkpoint(tmp_path, capsys):
    data = _depth_folder(tmp_path / "data", bad_stem="s3")
    out = tmp_path / "run"
    assert main([*DEPTH, "--data-root", str(data), "--out", str(out), "--skip-data-check"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "s3.png" in error and "--resume" in error
    assert "Traceback" not in error
    assert (out / "last" / "training_state.pt").is_file()


def test_a_worker_process_error_is_reduced_to_its_message():
    from polymax.engine.train import sample_error_message
    from polymax.errors import UserError

    wrapped = UserError("Caught UserError in DataLoader worker process 0.\n"
                        "Original Traceback (most recent call last):\n"
                        '  File "x.py", line 1, in f\n    raise UserError(...)\n'
                        "polymax.errors.UserError: data/depth/s3.png: corrupt or truncated image\n")
    assert sample_error_message(wrapped) == "data/depth/s3.png: corrupt or truncated image"
    assert sample_error_message(UserError("plain message")) == "plain message"


@pytest.mark.parametrize("flag", [["--skip-data-check"], ["--set", "data.check=false"]])
def test_the_data_check_can_be_skipped(tmp_path, flag):
    import argparse

    from polymax.cli.train import add_arguments, resolve
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = resolve(parser.parse_args(["--preset", "kmax_tiny_test", *flag]))
    assert config.data.check is False


def test_a_bad_sample_in_a_loader_worker_is_one_line_too(tmp_path, capsys):
    data = _depth_folder(tmp_path / "data", bad_stem="s3")
    out = tmp_path / "run"
    args = [*DEPTH, "--data-root", str(data), "--out", str(out), "--skip-data-check", "--set", "data.workers=1"]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "s3.png" in error and "Traceback" not in error
    assert (out / "last" / "training_state.pt").is_file()
