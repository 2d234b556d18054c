"""benchmarks/gpu.sh on a CPU machine: valid bash, a clean skip without a GPU, and (dry run) every command it
would run parses with the polymax CLI and names presets that exist."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from polymax.cli import build_parser
from polymax.presets import PRESETS

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                          env=environment, timeout=120)


def test_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_without_a_gpu_it_skips_and_writes_nothing(tmp_path):
    result = _run(tmp_path, GPU_SH_GPUS="0")
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stdout and not (tmp_path / "out").exists()


@pytest.mark.parametrize("gpus", [1, 2])
def test_dry_run_commands_parse(tmp_path, gpus):
    result = _run(tmp_path, GPU_SH_GPUS=str(gpus), GPU_SH_DRY_RUN="1")
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if " -m polymax " in line]
    assert len(commands) == 7 + (gpus >= 2)
    assert any("--compile" in c and "bf16" in c and "--channels-last" in c and "800" in c for c in commands)
    assert {c[c.index("--dtype") + 1] for c in commands if "--train" in c} == {"bf16", "fp16"}
    torchrun = [c for c in commands if "torch.distributed.run" in c]
    assert len(torchrun) == (gpus >= 2) and all("--nproc_per_node=2" in c for c in torchrun)
    for command in commands:
        start = next(i for i in range(len(command) - 1) if command[i:i + 2] == ["-m", "polymax"])
        argv = command[start + 2:]
        args = build_parser(load_verb=argv[0]).parse_args(argv)     # exits (fails the test) on a bad option
        assert args.preset in PRESETS
    assert not (tmp_path / "out").exists()
