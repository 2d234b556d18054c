"""`polymax predict` never overwrites or re-reads its own outputs, and names every input it skips."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import polymax
from polymax.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("models") / "depth"
    polymax.save_pretrained(polymax.build_model("polymax_tiny_synth_depth"), path)
    return path


def _photo(path, height=12, width=14, mode="RGB"):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def _predict(*args, model_dir) -> int:
    return main(["predict", *map(str, args), "--model", str(model_dir), "--no-progress"])


def test_out_equal_to_an_input_folder_is_refused(tmp_path, model_dir, capsys):
    _photo(tmp_path / "a.png")
    assert _predict(tmp_path, "--out", tmp_path, model_dir=model_dir) == 2
    err = capsys.readouterr().err
    assert "--out" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"], "nothing may be written into the inputs"


def test_out_inside_an_input_folder_never_rereads_outputs(tmp_path, model_dir, capsys):
    _photo(tmp_path / "a.png")
    out = tmp_path / "out"
    assert _predict(tmp_path, "--out", out, model_dir=model_dir) == 0
    written = sorted(p.name for p in out.rglob("*"))
    assert _predict(tmp_path, "--out", out, model_dir=model_dir) == 0     # the second run sees only a.png
    assert sorted(p.name for p in out.rglob("*")) == written
    assert "predicted 1 of 1" in capsys.readouterr().out


def test_a_glob_into_the_out_folder_is_skipped_and_named(tmp_path, model_dir, capsys):
    out = tmp_path / "out"
    out.mkdir()
    _photo(out / "old_depth_color.png")
    _photo(tmp_path / "b.png")
    assert _predict(tmp_path / "b.png", out / "*.png", "--out", out, model_dir=model_dir) == 1
    err = capsys.readouterr().err
    assert "old_depth_color.png" in err and "--out" in err
    assert not (out / "old_depth_color_depth.png").exists()


def test_same_stem_inputs_both_get_outputs(tmp_path, model_dir):
    (tmp_path / "in").mkdir()
    _photo(tmp_path / "in" / "a.png")
    _photo(tmp_path / "in" / "a.jpg")
    _photo(tmp_path / "in" / "a-2.png")
    out = tmp_path / "out"
    assert _predict(tmp_path / "in", "--out", out, model_dir=model_dir) == 0
    assert len(list(out.glob("*_depth.png"))) == 3


def test_every_skipped_path_is_named_once_and_counted(tmp_path, model_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "good.png")
    Image.fromarray(np.eye(8, dtype=bool)).save(folder / "bits.png")            # 1-bit: converted, not skipped
    os.symlink("loop.png", folder / "loop.png")                                 # a symlink loop
    os.symlink(folder / "missing.jpg", folder / "dangling.jpg")                 # a broken link
    (folder / "album.jpg").mkdir()                                              # a folder named like an image
    locked = _photo(folder / "locked.png")
    locked.chmod(0)
    try:
        unreadable = not os.access(locked, os.R_OK)
        status = _predict(folder, "--out", tmp_path / "out", model_dir=model_dir)
    finally:
        locked.chmod(0o644)
    captured = capsys.readouterr()
    skipped = ["loop.png", "dangling.jpg", "album.jpg"] + (["locked.png"] if unreadable else [])
    assert status == 1
    assert f"{len(skipped)} input(s) failed" in captured.err
    summary = captured.err.split("input(s) failed:")[1]
    for name in skipped:
        assert summary.count(name) == 1, name
    assert "Traceback" not in captured.err
    assert (tmp_path / "out" / "bits_depth.png").is_file()


def test_an_image_over_the_pixel_limit_is_skipped_and_the_batch_goes_on(tmp_path, model_dir, capsys):
    _photo(tmp_path / "big.png", 30, 40)
    _photo(tmp_path / "small.png", 10, 10)
    out = tmp_path / "out"
    status = _predict(tmp_path / "big.png", tmp_path / "small.png", "--out", out, "--max-pixels", "1000",
                      model_dir=model_dir)
    captured = capsys.readouterr()
    assert status == 1 and "predicted 1 of 2" in captured.out
    assert "big.png: 40×30 = 1200 pixels is over the limit of 1000 pixels" in captured.err
    assert (out / "small_depth.png").is_file()
    assert _predict(tmp_path / "big.png", "--out", out, "--max-pixels", "2000", model_dir=model_dir) == 0


def test_exif_orientation_is_honoured_by_predict(tmp_path, model_dir):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((10, 16, 3), dtype=np.uint8)).save(tmp_path / "phone.jpg", exif=exif)
    out = tmp_path / "out"
    assert _predict(tmp_path / "phone.jpg", "--out", out, model_dir=model_dir) == 0
    assert Image.open(out / "phone_depth.png").size == (10, 16), "predicted upright: 10 wide, 16 high"


def test_an_input_an_output_would_overwrite_is_refused(tmp_path, model_dir, capsys):
    _photo(tmp_path / "a.png")
    earlier = _photo(tmp_path / "a_depth.png")          # named like the depth map of a.png
    before = earlier.read_bytes()
    assert _predict(tmp_path / "a.png", earlier, "--out", tmp_path, model_dir=model_dir) == 2
    err = capsys.readouterr().err
    assert "a_depth.png" in err and "overwritten" in err and len(err.strip().splitlines()) == 1
    assert earlier.read_bytes() == before
    assert _predict(tmp_path / "a.png", "--out", tmp_path, model_dir=model_dir) == 0, "beside its input is fine"
