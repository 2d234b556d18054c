"""``polymax data inspect``: JSON summary on good data, one precise line naming the file on bad data."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from polymax.cli import main

H, W = 4, 6


def write_folder(root, *, bad_depth: bool = False) -> None:
    (root / "images").mkdir(parents=True)
    (root / "semantic").mkdir()
    (root / "depth").mkdir()
    for index, stem in enumerate(("a", "b", "c")):
        Image.fromarray(np.full((H, W, 3), 30 * index, dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        labels = np.zeros((H, W), dtype=np.uint8)
        labels[:, 3:] = 1
        labels[0, 0] = 255
        Image.fromarray(labels).save(root / "semantic" / f"{stem}.png")
        depth = np.full((H, W), 1000 * (index + 1), dtype=np.uint16)
        if bad_depth and stem == "b":
            depth = depth.astype(np.uint8)
        Image.fromarray(depth).save(root / "depth" / f"{stem}.png")
    (root / "dataset.yaml").write_text("classes: [wall, floor]\ndepth_scale: 0.001\n")


def test_inspect_prints_summary(tmp_path, capsys) -> None:
    write_folder(tmp_path)
    assert main(["data", "inspect", "--dataset", "folder", "--root", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_samples"] == 3 and summary["inspected"] == 3
    assert summary["labels"] == {"semantic": True, "panoptic": False, "depth": True, "normals": False,
                                 "crowd": False}
    assert summary["depth"]["min"] == 1.0 and summary["depth"]["max"] == 3.0
    classes = summary["classes"]
    assert classes["num_classes"] == 2 and classes["present"] == 2
    assert classes["ignore_fraction"] == round(1 / (H * W), 4)
    assert [entry["name"] for entry in classes["top"]] == ["floor", "wall"]


def test_inspect_names_the_first_bad_file(tmp_path, capsys) -> None:
    write_folder(tmp_path, bad_depth=True)
    assert main(["data", "inspect", "--dataset", "folder", "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "b.png" in error and "16-bit" in error


def test_inspect_skip_bad_counts(tmp_path, capsys) -> None:
    write_folder(tmp_path, bad_depth=True)
    assert main(["data", "inspect", "--dataset", "folder", "--root", str(tmp_path), "--skip-bad"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped"] == 1 and "b.png" in summary["skipped_errors"][0]


def test_inspect_missing_root_and_unknown_dataset(tmp_path, capsys) -> None:
    assert main(["data", "inspect", "--dataset", "folder", "--root", str(tmp_path / "nope")]) == 2
    assert "images" in capsys.readouterr().err
    assert main(["data", "inspect", "--dataset", "imagenet", "--root", str(tmp_path)]) == 2
    assert "unknown data set 'imagenet'" in capsys.readouterr().err


def test_inspect_synthetic_with_limit(capsys) -> None:
    assert main(["data", "inspect", "--dataset", "synth", "--split", "val", "--limit", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["inspected"] == 2 and summary["labels"]["panoptic"] and summary["labels"]["depth"]
