"""`polymax --help`, `--version` and every verb's `--help` answer without importing torch (a second or more)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from polymax.cli import VERBS

SRC = Path(__file__).resolve().parents[2] / "src"
PROBE = ("import runpy, sys\n"
         "try:\n"
         "    runpy.run_module('polymax', run_name='__main__')\n"
         "except SystemExit as stop:\n"
         "    code = stop.code\n"
         "heavy = sorted(m for m in ('torch', 'numpy', 'PIL', 'safetensors') if m in sys.modules)\n"
         "print('HEAVY', heavy, 'EXIT', code, file=sys.stderr)\n")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], *([verb, "--help"] for verb in VERBS),
                                  ["data", "inspect", "--help"], ["export", "onnx", "--help"]],
                         ids=lambda argv: " ".join(argv))
def test_help_and_version_do_not_import_torch(argv):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env,
                            timeout=60)
    last = result.stderr.strip().splitlines()[-1]
    assert last == "HEAVY [] EXIT 0", result.stderr
    assert result.stdout.strip()                      # it did answer
