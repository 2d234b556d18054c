"""Interruption safety, end to end in a subprocess: SIGTERM / Ctrl-C (SIGINT) finish the current step, write a
checkpoint and exit with 128 + signal; the run then continues with --resume. A non-finite loss stops the run
with a one-line message and leaves the previous checkpoint untouched."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

TRAIN = [sys.executable, "-m", "polymax", "train", "--preset", "kmax_tiny_test", "--batch-size", "2",
         "--set", "data.workers=0", "--set", "log_every=1", "--set", "checkpoint_every=0", "--set", "progress=false"]


def _steps_logged(out_dir) -> int:
    path = out_dir / "scalars.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _interrupt_run(out_dir, signum: int) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([*TRAIN, "--steps", "1000", "--out", str(out_dir)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while _steps_logged(out_dir) < 2:  # interrupt in the middle of training, not during start-up
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "training did not start in time"
            time.sleep(0.05)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow  # ~15 s: two subprocesses; the in-process SIGTERM path is in test_resume.py
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_resume_continues(tmp_path, signum):
    out_dir = tmp_path / "run"
    result = _interrupt_run(out_dir, signum)
    assert result.returncode == 128 + signum, result.stderr
    assert signal.Signals(signum).name in result.stderr
    state = torch.load(out_dir / "last" / "training_state.pt", weights_only=True)
    assert 2 <= state["step"] < 1000
    assert state["step"] == _steps_logged(out_dir)  # the step in progress was finished, then saved

    resumed = subprocess.run([*TRAIN, "--steps", str(state["step"] + 1), "--out", str(out_dir), "--resume"],
                             capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(out_dir / "last" / "training_state.pt", weights_only=True)["step"] == state["step"] + 1


@pytest.mark.slow  # ~9 s: two subprocesses; the in-process non-finite check is in test_train_loop.py
def test_diverging_run_stops_and_keeps_the_last_checkpoint(tmp_path):
    out_dir = tmp_path / "run"
    common = [*TRAIN, "--out", str(out_dir), "--set", "optim.warmup_steps=0"]
    first = subprocess.run([*common, "--steps", "1"], capture_output=True, text=True, timeout=120,
                           env={"OMP_NUM_THREADS": "1"})
    assert first.returncode == 0, first.stderr
    before = (out_dir / "last" / "model.safetensors").read_bytes()
    # A huge learning rate makes the weights non-finite; the next forward pass then produces NaN logits, on
    # which the Hungarian matching fails — the engine must turn that into a clean stop.
    diverging = subprocess.run([*common, "--steps", "5", "--resume", "--set", "optim.lr=1e30"],
                               capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1"})
    assert diverging.returncode == 2
    message = diverging.stderr.strip().splitlines()[-1]
    assert "non-finite" in message and "untouched" in message and "Traceback" not in diverging.stderr
    assert (out_dir / "last" / "model.safetensors").read_bytes() == before
    assert torch.load(out_dir / "last" / "training_state.pt", weights_only=True)["step"] == 1
    logged = [json.loads(line)["step"] for line in (out_dir / "scalars.jsonl").read_text().splitlines()]
    assert max(logged) < 5
