"""NYUD-v2 normals from the command line: train and eval with --set data.normals_dir, eval --flip, and the
one-line error when a normals preset meets a set without normals labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from polymax.cli import main

h5py = pytest.importorskip("h5py")
scipy_io = pytest.importorskip("scipy.io")

N, H, W = 4, 24, 32


def write_nyu(root) -> None:
    """A tiny labelled release in the official layout (MATLAB v7.3 axes reversed) and GeoNet-style normal PNGs."""
    rng = np.random.default_rng(0)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w", userblock_size=512) as handle:
        handle.create_dataset("images", data=rng.integers(0, 256, (N, 3, W, H), dtype=np.uint8))
        handle.create_dataset("labels", data=rng.choice([0, 1, 11, 21], (N, W, H)).astype(np.uint16))
        handle.create_dataset("rawDepths", data=rng.uniform(0.5, 9.0, (N, W, H)).astype(np.float32))
    scipy_io.savemat(root / "splits.mat", {"trainNdxs": np.array([[1.0], [2.0], [3.0]]), "testNdxs": np.array([[4.0]])})
    (root / "normals").mkdir()
    for frame in range(N):
        rgb = np.zeros((H, W, 3), dtype=np.uint8)
        rgb[:, : W // 2] = (200, 128, 200)
        rgb[:, W // 2:] = (128, 60, 220)
        Image.fromarray(rgb).save(root / "normals" / f"{frame:06d}.png")


TRAIN = ["train", "--preset", "polymax_tiny_synth_normals", "--dataset", "nyuv2", "--steps", "1", "--batch-size", "1",
         "--set", "data.workers=0", "--set", "progress=false", "--set", "tensorboard=false",
         "--set", "augment.recipe=normals", "--set", "data.crop_size=[33,33]"]


def test_nyu_normals_train_and_eval_from_the_cli(tmp_path, capsys):
    write_nyu(tmp_path)
    out = tmp_path / "run"
    assert main([*TRAIN, "--data-root", str(tmp_path), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "--set data.normals_dir=DIR" in error and len(error.splitlines()) == 1

    normals = f"data.normals_dir={tmp_path / 'normals'}"
    assert main([*TRAIN, "--data-root", str(tmp_path), "--out", str(out), "--set", normals]) == 0
    assert "precise BN" in capsys.readouterr().out          # a 1-step run re-estimates BN at its end
    evaluate = ["eval", "--model", str(out / "last"), "--dataset", "nyuv2", "--data-root", str(tmp_path),
                "--split", "test", "--json"]
    assert main(evaluate) == 2
    assert "data.normals_dir" in capsys.readouterr().err
    assert main([*evaluate, "--set", normals]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*evaluate, "--set", normals, "--flip"]) == 0
    flipped = json.loads(capsys.readouterr().out)
    assert set(plain) == set(flipped) and "mean" in plain
    assert main([*evaluate, "--set", "optim.lr=1"]) == 2
    assert "data.normals_dir=DIR or data.options" in capsys.readouterr().err
