"""`benchmarks/multitask_evidence.py` end to end on one training step per model: every model is trained,
evaluated on its tasks, the tokens model under every token, and the tables are printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "multitask_evidence.py"
TASKS = ("panoptic", "semantic", "instance", "depth", "normals")


@pytest.mark.slow
def test_one_step_run_writes_results_and_prints_the_tables(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, str(SCRIPT), "--steps", "2", "--seeds", "0", "--val", "2",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, check=True, capture_output=True, text=True,
                          timeout=900)
    results = json.loads((tmp_path / "results_s0.json").read_text())["0"]
    assert results["joint"]["steps"] == 2 and results["single_depth"]["steps"] == 1      # N/5 for the singles
    assert set(results["joint_all"]["metrics"]) == set(TASKS)
    assert set(results["tokens"]["wrong_tokens"]) == set(TASKS)
    assert set(results["timing"]) == {"joint", "tokens", "singles"}
    assert results["parameters"]["polymax_multitask_tiny_synth"] < sum(
        results["parameters"][f"single_{t}"] for t in TASKS)
    assert "(b) wrong-token table" in done.stdout and "| five single models, 1 steps each |" in done.stdout
