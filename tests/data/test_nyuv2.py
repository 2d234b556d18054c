"""NYUD-v2 loader on a tiny labelled .mat written in the official MATLAB v7.3 (HDF5) layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from polymax.data import build_dataset, dataset_info
from polymax.data.nyuv2 import eval_valid_mask
from polymax.errors import UserError

h5py = pytest.importorskip("h5py")
scipy_io = pytest.importorskip("scipy.io")

N, H, W = 5, 6, 8  # frames, rows, columns (the real release is 1449 × 480 × 640)


def frames(seed: int = 0) -> dict[str, np.ndarray]:
    """Per-frame arrays in natural (H, W[, C]) order, as MATLAB shows them."""
    rng = np.random.default_rng(seed)
    labels = rng.choice([0, 1, 5, 11, 21], size=(N, H, W)).astype(np.uint16)
    raw = rng.uniform(0.5, 9.0, size=(N, H, W)).astype(np.float32)
    raw[:, 0, 0] = 0.0  # missing Kinect reading
    return {"images": rng.integers(0, 256, size=(N, H, W, 3), dtype=np.uint8), "labels": labels,
            "rawDepths": raw, "depths": raw + 0.25}


def write_release(root, data: dict[str, np.ndarray], *, train=(1, 3, 4), test=(2, 5)) -> None:
    """MATLAB v7.3 = HDF5 with a 512-byte user block; MATLAB's column-major (H, W, C, N) array appears in
    HDF5 with reversed axes, (N, C, W, H)."""
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w", userblock_size=512) as handle:
        handle.create_dataset("images", data=data["images"].transpose(0, 3, 2, 1))  # (N, 3, W, H)
        for key in ("labels", "rawDepths", "depths"):
            handle.create_dataset(key, data=data[key].transpose(0, 2, 1))  # (N, W, H)
    with open(root / "nyu_depth_v2_labeled.mat", "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")
    # splits.mat is MATLAB v5 with 1-based column vectors (double), as in the official release.
    scipy_io.savemat(root / "splits.mat", {"trainNdxs": np.array(train, dtype=np.float64)[:, None],
                                           "testNdxs": np.array(test, dtype=np.float64)[:, None]})


def expected_semantic(raw: np.ndarray) -> np.ndarray:
    names40 = dataset_info("nyuv2").class_names
    by_raw = {0: 255, 1: names40.index("otherprop"), 5: names40.index("chair"), 11: names40.index("floor"),
              21: names40.index("wall")}
    return np.vectorize(by_raw.get)(raw)


def test_split_sizes_orientation_and_labels(tmp_path) -> None:
    data = frames()
    write_release(tmp_path, data)
    train = build_dataset("nyuv2", root=tmp_path, split="train")
    test = build_dataset("nyuv2", root=tmp_path, split="test")
    assert (len(train), len(test)) == (3, 2)
    sample = test[1]  # 1-based index 5 → frame 4
    assert sample.image.dtype == torch.uint8 and sample.image.shape == (3, H, W)
    assert np.array_equal(sample.image.permute(1, 2, 0).numpy(), data["images"][4])
    assert sample.semantic.dtype == torch.int64
    assert np.array_equal(sample.semantic.numpy(), expected_semantic(data["labels"][4]))
    assert sample.depth.dtype == torch.float32
    assert np.allclose(sample.depth.numpy(), data["rawDepths"][4]) and sample.depth[0, 0] == 0
    assert sample.normals is None


def test_wall_and_floor_are_the_first_two_classes(tmp_path) -> None:
    names = dataset_info("nyuv2").class_names
    assert len(names) == 40 and names[:2] == ("wall", "floor")


def test_filled_depth_option(tmp_path) -> None:
    data = frames()
    write_release(tmp_path, data)
    sample = build_dataset("nyuv2", root=tmp_path, split="train", depth="filled")[0]
    assert np.allclose(sample.depth.numpy(), data["depths"][0])


def test_normals_folder(tmp_path) -> None:
    data = frames()
    write_release(tmp_path, data)
    folder = tmp_path / "normals"
    folder.mkdir()
    for frame in range(N):
        rgb = np.zeros((H, W, 3), dtype=np.uint8)
        rgb[:, W // 2:] = (128, 128, 255)   # n ≈ (0, 0, 1): facing the camera axis
        Image.fromarray(rgb).save(folder / f"{frame:06d}.png")
    sample = build_dataset("nyuv2", root=tmp_path, split="train", normals_dir=folder)[0]
    assert sample.normals.shape == (3, H, W)
    assert torch.all(sample.normals[:, :, : W // 2] == 0)  # (0, 0, 0) = invalid
    assert torch.allclose(sample.normals[:, 0, -1], torch.tensor([0.0, 0.0, 1.0]), atol=0.01)


def test_normals_of_wrong_size_are_rejected(tmp_path) -> None:
    write_release(tmp_path, frames())
    folder = tmp_path / "normals"
    folder.mkdir()
    for frame in range(N):
        Image.fromarray(np.zeros((H + 1, W, 3), dtype=np.uint8)).save(folder / f"{frame:06d}.png")
    dataset = build_dataset("nyuv2", root=tmp_path, split="train", normals_dir=folder)
    with pytest.raises(UserError, match="000000.png"):
        dataset[0]


def test_unknown_label_value_is_an_error(tmp_path) -> None:
    data = frames()
    data["labels"][0, 2, 2] = 900
    write_release(tmp_path, data)
    with pytest.raises(UserError, match="outside 0..894"):
        build_dataset("nyuv2", root=tmp_path, split="train")[0]


def test_missing_files_and_bad_split_are_named(tmp_path) -> None:
    with pytest.raises(UserError, match="nyu_depth_v2_labeled.mat"):
        build_dataset("nyuv2", root=tmp_path, split="train")
    write_release(tmp_path, frames(), train=(1, 9))
    with pytest.raises(UserError, match="splits.mat"):
        build_dataset("nyuv2", root=tmp_path, split="train")
    with pytest.raises(UserError, match="split 'val'"):
        build_dataset("nyuv2", root=tmp_path, split="val")


def test_eval_mask_uses_crop_and_range() -> None:
    depth = torch.full((480, 640), 2.0)
    depth[100, 100] = 12.0
    mask = eval_valid_mask(depth)
    assert mask.sum() == 426 * 560 - 1
    assert not mask[44, 300] and mask[45, 300] and not mask[471, 300] and mask[470, 300]
    assert not mask[200, 40] and mask[200, 41] and not mask[200, 601]
    with pytest.raises(UserError):
        eval_valid_mask(torch.ones(6, 8))
