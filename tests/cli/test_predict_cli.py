"""`polymax predict`: inputs of every kind, one bad file among good ones, files that read back exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import polymax
from polymax.cli import main
from polymax.data.images import read_png
from polymax.inference.predictor import Predictor

KEEP_ALL = dict(postprocess__pixel_confidence=0.0, postprocess__thing_confidence=0.0,
                postprocess__stuff_confidence=0.0, postprocess__overlap=0.0, postprocess__thing_area_limit=0,
                postprocess__stuff_area_limit=0)


@pytest.fixture(scope="module")
def panoptic_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "panoptic"
    polymax.save_pretrained(polymax.build_model("kmax_tiny_test", **KEEP_ALL), path)
    return path


def _photo(path, height, width, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": None}[mode]
    shape = (height, width) if channels is None else (height, width, channels)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def test_corrupt_and_missing_files_are_skipped_and_reported(tmp_path, panoptic_dir, capsys):
    good = [_photo(tmp_path / "a.png", 17, 23), _photo(tmp_path / "grey.png", 40, 30, "L"),
            _photo(tmp_path / "alpha.png", 25, 35, "RGBA")]
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(_photo(tmp_path / "full.png", 30, 30).read_bytes()[:80])
    out = tmp_path / "out"
    args = ["predict", str(good[0]), str(corrupt), str(good[1]), str(truncated), str(tmp_path / "nope.png"),
            str(good[2]), "--model", str(panoptic_dir), "--out", str(out), "--batch-size", "2", "--no-progress"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "predicted 3 of 6" in captured.out
    assert "3 input(s) failed" in captured.err
    for name in ("broken.jpg", "cut.png", "nope.png"):
        assert name in captured.err
    assert "Traceback" not in captured.err
    for stem in ("a", "grey", "alpha"):
        for suffix in ("panoptic.png", "panoptic_color.png", "segments.json", "semantic.png", "semantic_color.png"):
            assert (out / f"{stem}_{suffix}").is_file(), f"{stem}_{suffix}"
    assert not list(out.glob("broken*")) and not list(out.glob("cut*"))
    assert not list(out.glob("*depth*")), "a panoptic model writes no depth"


def test_saved_label_maps_read_back_exactly(tmp_path, panoptic_dir):
    image = _photo(tmp_path / "room.png", 41, 67, seed=4)
    out = tmp_path / "out"
    assert main(["predict", str(image), "--model", str(panoptic_dir), "--out", str(out), "--no-progress"]) == 0
    expected = Predictor.from_pretrained(panoptic_dir).predict(np.asarray(Image.open(image)))
    semantic = read_png(out / "room_semantic.png", bit_depth=16, channels=1)
    np.testing.assert_array_equal(semantic, expected.semantic)
    record = json.loads((out / "room_segments.json").read_text())
    assert record["file_name"] == "room_panoptic.png" and (record["height"], record["width"]) == (41, 67)
    segment_ids = read_png(out / "room_panoptic.png", bit_depth=16, channels=1).astype(np.int64)
    assert record["segments_info"], "KEEP_ALL post-processing should paste segments"
    for info in record["segments_info"]:
        pixels = segment_ids == info["id"]
        assert int(pixels.sum()) == info["area"]
        assert (expected.panoptic[pixels] == info["panoptic_id"]).all()
    assert Image.open(out / "room_panoptic_color.png").height >= 41


def test_depth_png_round_trips_within_a_millimetre(tmp_path, depth_dir):
    image = _photo(tmp_path / "odd.png", 23, 17, seed=5)
    out = tmp_path / "out"
    assert main(["predict", str(image), "--model", str(depth_dir), "--out", str(out), "--npy", "--no-progress",
                 "--device", "cpu"]) == 0
    expected = Predictor.from_pretrained(depth_dir).predict(np.asarray(Image.open(image))).depth
    millimetres = read_png(out / "odd_depth.png", bit_depth=16, channels=1)
    assert millimetres.shape == (23, 17)
    assert np.abs(millimetres / 1000.0 - expected).max() <= 1e-3
    np.testing.assert_allclose(np.load(out / "odd_depth.npy"), expected, atol=1e-5)
    assert (out / "odd_depth_color.png").is_file()
    assert not list(out.glob("*semantic*"))


def test_folders_globs_and_name_clashes(tmp_path, depth_dir):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    _photo(tmp_path / "in" / "x.png", 20, 20)
    _photo(tmp_path / "in" / "sub" / "y.jpg", 20, 30)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    (tmp_path / "other").mkdir()
    _photo(tmp_path / "other" / "x.png", 25, 20)
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in"), str(tmp_path / "other" / "*.png"), "--model", str(depth_dir),
            "--out", str(out), "--probabilities", "--no-progress"]
    assert main(args) == 0
    assert (out / "x_depth.png").is_file() and (out / "sub" / "y_depth.png").is_file()
    assert (out / "x-2_depth.png").is_file(), "the second x.png must not overwrite the first"
    assert (out / "x_probabilities.png").is_file()


def test_nothing_to_predict_or_bad_model_is_a_one_line_error(tmp_path, depth_dir, capsys):
    assert main(["predict", str(tmp_path / "*.png"), "--model", str(depth_dir), "--out", str(tmp_path)]) == 2
    assert "no images to predict" in capsys.readouterr().err
    image = _photo(tmp_path / "a.png", 10, 10)
    assert main(["predict", str(image), "--model", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1


def test_overlay_and_captioned_probabilities(tmp_path, depth_dir):
    image = _photo(tmp_path / "room.png", 30, 40, seed=3)
    out = tmp_path / "out"
    assert main(["predict", str(image), "--model", str(depth_dir), "--out", str(out), "--overlay",
                 "--probabilities", "--no-progress"]) == 0
    overlay = Image.open(out / "room_depth_overlay.png")
    assert overlay.width > 40 and overlay.height >= 150                    # the map, then its colour bar
    assert np.asarray(overlay)[:30, :40].std() > 0
    result = Predictor.from_pretrained(depth_dir).predict(np.asarray(Image.open(image)), probabilities=True)
    assert len(result.clusters) == result.probabilities.shape[0] == 16
    assert all(caption.endswith(" m") for _, caption in result.clusters)  # each cluster's bin depth
    mosaic = Image.open(out / "room_probabilities.png")
    assert mosaic.height > 2 * 30                                           # two rows of captioned tiles
    assert not (out / "room_depth_overlay.png").samefile(out / "room_depth_color.png")
