"""``polymax convert deeplab2`` and ``polymax presets``: round trip to a loadable model; one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from deeplab2_export import deeplab2_variables

import polymax
from polymax.build import build_model
from polymax.cli import main

PRESET = "kmax_tiny_test"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model and an .npz of its weights under deeplab2's variable names."""
    model = build_model(PRESET).eval()
    # Non-trivial BN statistics, so that a mis-mapped running mean / variance shows in the outputs.
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.npz"
    variables = deeplab2_variables(model)
    np.savez(path, **variables)
    return model, variables, path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_convert_then_load_gives_the_same_model(checkpoint, tmp_path, capsys):
    model, _, path = checkpoint
    out = tmp_path / "converted"
    assert main(["convert", "deeplab2", str(path), "--preset", PRESET, "--out", str(out)]) == 0
    assert "converted" in capsys.readouterr().out
    loaded = polymax.load_model(out)
    images = torch.rand(1, 3, 40, 47) * 255
    with torch.no_grad():
        expected, actual = model(images).final, loaded(images).final
    torch.testing.assert_close(actual.mask_logits, expected.mask_logits)
    torch.testing.assert_close(actual.class_logits, expected.class_logits)
    assert loaded.config == model.config


@pytest.mark.parametrize("change, expected", [
    ("missing", "1 missing"), ("extra", "1 unused"), ("misshaped", "1 mis-shaped")])
def test_checkpoint_mismatch_is_one_line(checkpoint, tmp_path, capsys, change, expected):
    _, variables, _ = checkpoint
    variables = dict(variables)
    name = "transformer_decoder/_mask_embedding_projection/_conv/kernel"
    if change == "missing":
        del variables[name]
    elif change == "extra":
        variables["transformer_decoder/_unknown/kernel"] = np.zeros(1, dtype=np.float32)
    else:
        variables[name] = np.zeros((1, 3, 3), dtype=np.float32)
    path = tmp_path / "bad.npz"
    np.savez(path, **variables)
    assert main(["convert", "deeplab2", str(path), "--preset", PRESET, "--out", str(tmp_path / "out")]) == 2
    assert expected in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_bad_sources_and_presets(checkpoint, tmp_path, capsys):
    _, _, path = checkpoint
    out = str(tmp_path / "out")
    assert main(["convert", "deeplab2", str(path), "--preset", "kmax_tiny_tset", "--out", out]) == 2
    assert "unknown preset" in _error_line(capsys)
    assert main(["convert", "deeplab2", str(tmp_path / "absent.npz"), "--preset", PRESET, "--out", out]) == 2
    assert "does not exist" in _error_line(capsys)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(path.read_bytes()[:200])
    assert main(["convert", "deeplab2", str(corrupt), "--preset", PRESET, "--out", out]) == 2
    assert "corrupt" in _error_line(capsys)


def test_cli_process_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "polymax", "convert", "deeplab2", str(tmp_path / "x.npz"),
                             "--preset", PRESET, "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in polymax.PRESETS:
        assert name in out
    assert main(["presets", "--params", "tiny_test"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].split()[0] == PRESET and lines[1].endswith("M")
