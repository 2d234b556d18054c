"""Taskonomy loader on a tiny folder tree in the release layout (16-bit depth, 8-bit normals, semantic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from polymax.data import build_dataset
from polymax.errors import UserError

H, W = 4, 6


def save(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_frame(root, building: str, point: int, *, depth=None, normal=None, semantic=None) -> str:
    stem = f"point_{point}_view_0"
    rng = np.random.default_rng(point)
    save(root / "rgb" / building / f"{stem}_domain_rgb.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    if depth is None:
        depth = np.full((H, W), 1024, dtype=np.uint16)  # 2 m
    save(root / "depth_zbuffer" / building / f"{stem}_domain_depth_zbuffer.png", depth)
    if normal is None:
        normal = np.full((H, W, 3), (128, 128, 255), dtype=np.uint8)
    save(root / "normal" / building / f"{stem}_domain_normal.png", normal)
    if semantic is None:
        semantic = np.ones((H, W), dtype=np.uint8)
    save(root / "segment_semantic" / building / f"{stem}_domain_segment_semantic.png", semantic)
    return stem


def write_splits(root) -> None:
    (root / "splits.csv").write_text("id,train,val,test\nallensville,1,0,0\nbeechwood,0,1,0\ncosmos,0,0,1\n")


def test_building_split_and_decoding(tmp_path) -> None:
    depth = np.full((H, W), 512, dtype=np.uint16)          # 1 m
    depth[0, 0] = 65535                                    # no geometry
    depth[0, 1] = 3 * 512 + 256                            # 3.5 m
    normal = np.full((H, W, 3), 128, dtype=np.uint8)       # mid-grey = invalid
    normal[1, :] = (255, 128, 128)                         # +x
    normal[2, :] = (128, 0, 128)                           # -y
    normal[1, 0] = (255, 128, 128)
    semantic = np.array([[0, 1, 2, 17, 5, 1]] * H, dtype=np.uint8)
    write_frame(tmp_path, "allensville", 1, depth=depth, normal=normal, semantic=semantic)
    write_frame(tmp_path, "allensville", 2)
    write_frame(tmp_path, "beechwood", 3)
    write_splits(tmp_path)
    train = build_dataset("taskonomy", root=tmp_path, split="train")
    assert len(train) == 2 and len(build_dataset("taskonomy", root=tmp_path, split="val")) == 1
    assert len(build_dataset("taskonomy", root=tmp_path, split="all")) == 3
    sample = train[0]
    assert sample.name == "allensville/point_1_view_0"
    assert sample.image.shape == (3, H, W) and sample.image.dtype == torch.uint8
    assert sample.depth.dtype == torch.float32
    assert sample.depth[0, 0] == 0 and sample.depth[0, 1] == 3.5 and sample.depth[1, 1] == 1.0
    assert torch.allclose(sample.normals[:, 1, 2], torch.tensor([1.0, 0.0, 0.0]), atol=0.01)
    assert torch.allclose(sample.normals[:, 2, 2], torch.tensor([0.0, -1.0, 0.0]), atol=0.01)
    assert torch.all(sample.normals[:, 3] == 0)             # grey rows are invalid
    assert torch.all(sample.normals[:, 0, 0] == 0)          # invalid where depth is invalid
    assert sample.semantic[0].tolist() == [255, 0, 1, 16, 4, 0]


def test_text_split_file_and_max_depth(tmp_path) -> None:
    depth = np.full((H, W), 512 * 20, dtype=np.uint16)    # 20 m
    depth[:, :2] = 512
    write_frame(tmp_path, "cosmos", 1, depth=depth)
    split_file = tmp_path / "mine.txt"
    split_file.write_text("cosmos\n")
    sample = build_dataset("taskonomy", root=tmp_path, split="test", split_file=split_file, max_depth=15.6)[0]
    assert sample.depth[:, :2].eq(1.0).all() and sample.depth[:, 2:].eq(0).all()


def test_mask_valid_folder_invalidates(tmp_path) -> None:
    stem = write_frame(tmp_path, "allensville", 1)
    mask = np.full((H, W), 255, dtype=np.uint8)
    mask[:, 0] = 0
    save(tmp_path / "mask_valid" / "allensville" / f"{stem}_domain_depth_zbuffer.png", mask)
    write_splits(tmp_path)
    sample = build_dataset("taskonomy", root=tmp_path, split="train")[0]
    assert sample.depth[:, 0].eq(0).all() and sample.depth[:, 1:].gt(0).all()
    assert sample.normals[:, :, 0].eq(0).all()


def test_eight_bit_depth_is_rejected_with_its_name(tmp_path) -> None:
    write_frame(tmp_path, "allensville", 1, depth=np.full((H, W), 7, dtype=np.uint8))
    write_splits(tmp_path)
    with pytest.raises(UserError, match=r"point_1_view_0_domain_depth_zbuffer.png.*16-bit"):
        build_dataset("taskonomy", root=tmp_path, split="train")[0]


def test_unknown_semantic_id_and_missing_label_file(tmp_path) -> None:
    write_frame(tmp_path, "allensville", 1, semantic=np.full((H, W), 18, dtype=np.uint8))
    stem = write_frame(tmp_path, "allensville", 2)
    write_splits(tmp_path)
    dataset = build_dataset("taskonomy", root=tmp_path, split="train")
    with pytest.raises(UserError, match="label 18"):
        dataset[0]
    (tmp_path / "normal" / "allensville" / f"{stem}_domain_normal.png").unlink()
    with pytest.raises(UserError, match=f"{stem}_domain_normal.png"):
        dataset[1]


def test_missing_split_file_and_building(tmp_path) -> None:
    write_frame(tmp_path, "allensville", 1)
    with pytest.raises(UserError, match="splits.csv"):
        build_dataset("taskonomy", root=tmp_path, split="train")
    write_splits(tmp_path)
    with pytest.raises(UserError, match="beechwood"):
        build_dataset("taskonomy", root=tmp_path, split="val")


def test_skip_bad_counts_instead_of_stopping(tmp_path) -> None:
    write_frame(tmp_path, "allensville", 1, depth=np.full((H, W), 7, dtype=np.uint8))
    write_frame(tmp_path, "allensville", 2)
    write_splits(tmp_path)
    dataset = build_dataset("taskonomy", root=tmp_path, split="train", skip_bad=True)
    assert dataset[0].name == "allensville/point_2_view_0"
    assert dataset.summary()["skipped"] == 1 and "16-bit" in dataset.summary()["errors"][0]
