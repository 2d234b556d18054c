"""`benchmarks/cluster_vs_pixel.py` end to end on one training step: every run of the chosen task is trained,
evaluated and written to the table, the JSON and the plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cluster_vs_pixel.py"


@pytest.mark.slow
def test_one_step_run_writes_table_json_and_plot(tmp_path):
    subprocess.run([sys.executable, str(SCRIPT), "--steps", "1", "--only", "normals", "--out", str(tmp_path)],
                   check=True, capture_output=True, text=True, timeout=600)
    rows = json.loads((tmp_path / "cluster_vs_pixel.json").read_text())
    assert [row["run"] for row in rows] == ["cluster", "per-pixel", "K=4", "K=8", "K=16"]
    assert all(0.0 <= row["metrics"]["mean"] <= 180.0 for row in rows)
    table = (tmp_path / "cluster_vs_pixel.md").read_text()
    assert table.count("| normals |") == 5 and "--steps 1" in table
    assert all(line.split(" | ")[4] == "–" for line in table.splitlines() if line.startswith("| normals |"))
    from PIL import Image
    assert Image.open(tmp_path / "cluster_vs_pixel.png").size == (900, 420)
