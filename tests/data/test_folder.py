"""Custom folder data sets: any subset of semantic / panoptic / depth / normals, described by dataset.yaml."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from polymax.data import build_dataset, dataset_info
from polymax.data.collate import collate
from polymax.errors import UserError

H, W = 5, 7
YAML = """name: rooms
classes: [wall, floor, {name: chair, thing: true, color: [200, 40, 40]}]
depth_scale: 0.001
min_depth: 0.1
max_depth: 8.0
label_divisor: 1000
"""


def save(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_images(base, stems=("a", "b")) -> None:
    for index, stem in enumerate(stems):
        save(base / "images" / f"{stem}.png", np.full((H, W, 3), 10 * index, dtype=np.uint8))


def test_depth_only_folder(tmp_path) -> None:
    write_images(tmp_path)
    for stem in ("a", "b"):
        depth = np.full((H, W), 2500, dtype=np.uint16)   # 2.5 m in millimetres
        depth[0, 0] = 0
        depth[0, 1] = 9000                                # beyond max_depth → invalid
        save(tmp_path / "depth" / f"{stem}.png", depth)
    (tmp_path / "dataset.yaml").write_text("depth_scale: 0.001\nmax_depth: 8.0\n")
    dataset = build_dataset("folder", root=tmp_path)
    assert len(dataset) == 2
    sample = dataset[0]
    assert sample.semantic is None and sample.panoptic is None and sample.normals is None
    assert sample.depth[1, 1] == pytest.approx(2.5) and sample.depth[0, 0] == 0 and sample.depth[0, 1] == 0
    batch = collate([dataset[0], dataset[1]])
    assert batch.targets.semantic is None and batch.targets.normals is None
    assert batch.targets.depth.shape == (2, H, W)


def test_semantic_only_folder_with_yaml_classes(tmp_path) -> None:
    write_images(tmp_path)
    labels = np.array([[0, 1, 2, 255, 0, 1, 2]] * H, dtype=np.uint8)
    for stem in ("a", "b"):
        save(tmp_path / "semantic" / f"{stem}.png", labels)
    (tmp_path / "dataset.yaml").write_text(YAML)
    sample = build_dataset("folder", root=tmp_path)[1]
    assert sample.semantic[0].tolist() == [0, 1, 2, 255, 0, 1, 2] and sample.depth is None
    info = dataset_info("folder", root=tmp_path)
    assert info.class_names == ("wall", "floor", "chair") and info.thing_classes == (2,)
    assert info.colors[2] == (200, 40, 40) and info.name == "rooms"


def test_unknown_class_id_is_an_error(tmp_path) -> None:
    write_images(tmp_path, ("a",))
    save(tmp_path / "semantic" / "a.png", np.full((H, W), 7, dtype=np.uint8))
    (tmp_path / "dataset.yaml").write_text(YAML)
    with pytest.raises(UserError, match=r"a.png: semantic label has class id 7"):
        build_dataset("folder", root=tmp_path)[0]


def test_panoptic_and_normals_and_derived_semantic(tmp_path) -> None:
    write_images(tmp_path, ("a",))
    ids = np.zeros((H, W), dtype=np.int64)
    ids[:, :3] = 1 * 1000            # floor (stuff)
    ids[:, 3:5] = 2 * 1000 + 1       # chair #1
    ids[:, 5:] = 255 * 1000          # void
    rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], -1).astype(np.uint8)
    save(tmp_path / "panoptic" / "a.png", rgb)
    normals = np.zeros((H, W, 3), dtype=np.uint8)
    normals[:, :4] = (128, 0, 128)   # (0, -1, 0): floor seen by a level camera
    save(tmp_path / "normals" / "a.png", normals)
    (tmp_path / "dataset.yaml").write_text(YAML)
    sample = build_dataset("folder", root=tmp_path)[0]
    assert sample.panoptic[0].tolist() == [1000, 1000, 1000, 2001, 2001, 255000, 255000]
    assert sample.semantic[0].tolist() == [1, 1, 1, 2, 2, 255, 255]
    assert torch.allclose(sample.normals[:, 0, 0], torch.tensor([0.0, -1.0, 0.0]), atol=0.01)
    assert sample.normals[:, 0, 5].eq(0).all()


def test_split_folders_and_lists(tmp_path) -> None:
    write_images(tmp_path / "val", ("x",))
    write_images(tmp_path / "train", ("p", "q", "r"))
    assert len(build_dataset("folder", root=tmp_path, split="train")) == 3
    assert len(build_dataset("folder", root=tmp_path, split="val")) == 1
    flat = tmp_path / "flat"
    write_images(flat, ("a", "b"))
    (flat / "val.txt").write_text("b\n")
    assert [s.name for s in build_dataset("folder", root=flat, split="val")] == ["b"]
    with pytest.raises(UserError, match="test.txt"):
        build_dataset("folder", root=flat, split="test")


def test_missing_label_file_wrong_size_and_bit_depth(tmp_path) -> None:
    write_images(tmp_path, ("a", "b"))
    save(tmp_path / "depth" / "a.png", np.full((H, W), 10, dtype=np.uint8))      # 8-bit depth
    save(tmp_path / "depth" / "b.png", np.full((H + 1, W), 10, dtype=np.uint16))  # wrong size
    dataset = build_dataset("folder", root=tmp_path)
    with pytest.raises(UserError, match=r"a.png: depth PNG.*16-bit"):
        dataset[0]
    with pytest.raises(UserError, match=r"b.png: depth is 7x6"):
        dataset[1]
    (tmp_path / "depth" / "b.png").unlink()
    with pytest.raises(UserError, match=r"b.png"):
        dataset[1]


def test_labels_without_yaml_and_bad_yaml(tmp_path) -> None:
    write_images(tmp_path, ("a",))
    save(tmp_path / "semantic" / "a.png", np.zeros((H, W), dtype=np.uint8))
    with pytest.raises(UserError, match="dataset.yaml"):
        build_dataset("folder", root=tmp_path)
    (tmp_path / "dataset.yaml").write_text("classes: [a]\ndepth_scael: 1\n")
    with pytest.raises(UserError, match="depth_scael"):
        build_dataset("folder", root=tmp_path)


def test_phone_photo_is_read_upright_and_its_label_as_stored(tmp_path) -> None:
    """The photo's EXIF orientation is applied; labels (no EXIF) are read as stored and must match it upright."""
    exif = Image.Exif()
    exif[0x0112] = 6                                     # display rotated 90° clockwise
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((W, H, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.jpg", exif=exif)
    save(tmp_path / "depth" / "a.png", np.full((H, W), 2500, dtype=np.uint16))   # upright: H × W
    (tmp_path / "dataset.yaml").write_text("depth_scale: 0.001\nmax_depth: 8.0\n")
    sample = build_dataset("folder", root=tmp_path)[0]
    assert sample.image.shape == (3, H, W) and sample.depth.shape == (H, W)
