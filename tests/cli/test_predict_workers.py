"""`polymax predict --workers N`: images decoded and prepared in DataLoader workers give the same files, in the
same order, and the same failure report as reading them in the process (--workers 0)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from polymax.cli import main
from polymax.inference.images_io import InputImage
from polymax.inference.loading import InputFiles, input_loader
from polymax.inference.predictor import Predictor


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate([(30, 40), (50, 20), (33, 33), (20, 60)]):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    (folder / "2b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    return folder


def test_workers_give_the_same_files_and_failures(tmp_path, depth_dir, inputs, capsys):
    reports = {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        code = main(["predict", str(inputs), "--model", str(depth_dir), "--out", str(out), "--batch-size", "2",
                     "--workers", workers, "--resize", "none", "--no-progress"])
        captured = capsys.readouterr()
        assert code == 1 and "predicted 4 of 5" in captured.out and "1 input(s) failed" in captured.err
        reports[workers] = (captured.err.count("2b_broken.jpg"), sorted(p.name for p in out.iterdir()))
    assert reports["0"] == reports["2"] and reports["0"][0] >= 1
    for name in reports["0"][1]:
        assert (tmp_path / "w0" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name


def test_loader_keeps_the_input_order_and_returns_errors(depth_dir, inputs):
    predictor = Predictor.from_pretrained(depth_dir, resize="none")
    images = [InputImage(path, path.stem) for path in sorted(inputs.iterdir())]
    files = InputFiles(images, pickle.loads(pickle.dumps(predictor.preprocess)))    # workers get a copy
    loaded = [item for batch in input_loader(files, batch_size=2, workers=2) for item in batch]
    assert [item.item.name for item in loaded] == [image.name for image in images]
    assert [item.error is not None for item in loaded] == [False, False, False, True, False]
    for item in loaded:
        if item.prepared is not None:
            array = np.asarray(Image.open(item.item.path).convert("RGB"))
            expected = predictor.prepare(array)
            assert item.prepared.geometry == expected.geometry
            assert torch.equal(item.prepared.image, expected.image)


def test_a_negative_worker_count_is_one_line(tmp_path, depth_dir, inputs, capsys):
    assert main(["predict", str(inputs), "--model", str(depth_dir), "--out", str(tmp_path / "o"),
                 "--workers", "-1"]) == 2
    assert "--workers must be 0 or more" in capsys.readouterr().err
