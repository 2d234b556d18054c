"""COCO / Cityscapes / ADE20K panoptic readers on tiny JSON + RGB-encoded PNG files in the official layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from polymax.data import build_dataset, dataset_info
from polymax.errors import UserError

H, W = 4, 6


def encode(ids: np.ndarray) -> np.ndarray:
    """Segment ids → RGB (id = R + 256·G + 256²·B)."""
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def segment_map() -> np.ndarray:
    ids = np.zeros((H, W), dtype=np.int64)     # column 0 stays void (0)
    ids[:, 1:3] = 70000                        # stuff, id > 65535 exercises the blue channel
    ids[:2, 3] = 300                           # thing instance A (id uses the green channel)
    ids[2:, 3] = 301                           # thing instance B
    ids[:, 4] = 5                              # crowd region
    ids[:, 5] = 6                              # second thing class
    return ids


def write_panoptic(json_path, png_dir, image_path, *, image_id, png_name, image_name, segments, ids,
                   categories, image_size=(H, W)) -> None:
    png_dir.mkdir(parents=True, exist_ok=True)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*image_size, 3), dtype=np.uint8) + 90).save(image_path)
    Image.fromarray(encode(ids)).save(png_dir / png_name)
    content = {"images": [{"id": image_id, "file_name": image_name, "height": H, "width": W}],
               "annotations": [{"image_id": image_id, "file_name": png_name, "segments_info": segments}],
               "categories": categories}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(content))


def coco(root, *, ids=None, segments=None, image_size=(H, W)) -> None:
    # COCO ids: 1 person (thing, class 0), 3 car (thing, class 2), 92 banner (stuff, class 80).
    segments = segments if segments is not None else [
        {"id": 70000, "category_id": 92, "iscrowd": 0}, {"id": 300, "category_id": 1, "iscrowd": 0},
        {"id": 301, "category_id": 1, "iscrowd": 0}, {"id": 5, "category_id": 1, "iscrowd": 1},
        {"id": 6, "category_id": 3, "iscrowd": 0}]
    categories = [{"id": 1, "name": "person", "isthing": 1}, {"id": 3, "name": "car", "isthing": 1},
                  {"id": 92, "name": "banner", "isthing": 0}]
    write_panoptic(root / "annotations" / "panoptic_val2017.json", root / "annotations" / "panoptic_val2017",
                   root / "val2017" / "000000000139.jpg", image_id=139, png_name="000000000139.png",
                   image_name="000000000139.jpg", segments=segments,
                   ids=segment_map() if ids is None else ids, categories=categories, image_size=image_size)


def test_coco_decoding(tmp_path) -> None:
    coco(tmp_path)
    dataset = build_dataset("coco_panoptic", root=tmp_path, split="val")
    assert len(dataset) == 1
    sample = dataset[0]
    info = dataset_info("coco_panoptic")
    assert info.num_classes == 133 and info.label_divisor == 256 and len(info.thing_classes) == 80
    assert info.class_names[0] == "person" and info.class_names[80] == "banner"
    expected_semantic = [255, 80, 80, 0, 0, 2]
    assert sample.semantic[0].tolist() == expected_semantic and sample.semantic.dtype == torch.int64
    d = 256
    assert sample.panoptic[0].tolist() == [255 * d, 80 * d, 80 * d, 0 * d + 1, 0 * d, 2 * d + 1]
    assert sample.panoptic[3, 3] == 0 * d + 2          # second person instance
    assert sample.crowd[:, 4].all() and sample.crowd.sum() == H
    assert sample.image.shape == (3, H, W) and sample.image.dtype == torch.uint8


def test_coco_errors_name_the_file(tmp_path) -> None:
    coco(tmp_path, segments=[{"id": 70000, "category_id": 92, "iscrowd": 0}])
    with pytest.raises(UserError, match=r"000000000139.png.*not in segments_info"):
        build_dataset("coco_panoptic", root=tmp_path, split="val")[0]
    coco(tmp_path, image_size=(H + 2, W))
    with pytest.raises(UserError, match=r"000000000139.png.*image is"):
        build_dataset("coco_panoptic", root=tmp_path, split="val")[0]
    with pytest.raises(UserError, match="panoptic_train2017.json"):
        build_dataset("coco_panoptic", root=tmp_path, split="train")


def test_coco_truncated_image_is_named(tmp_path) -> None:
    coco(tmp_path)
    image = tmp_path / "val2017" / "000000000139.jpg"
    image.write_bytes(image.read_bytes()[:60])
    with pytest.raises(UserError, match="000000000139.jpg"):
        build_dataset("coco_panoptic", root=tmp_path, split="val")[0]


def test_cityscapes_label_ids_map_to_train_ids(tmp_path) -> None:
    ids = np.zeros((H, W), dtype=np.int64)
    ids[:, :2] = 7             # road (label id 7 → train id 0)
    ids[:, 2:4] = 26001        # car instance (label id 26 → train id 13)
    ids[:, 4:] = 26002
    segments = [{"id": 7, "category_id": 7, "iscrowd": 0}, {"id": 26001, "category_id": 26, "iscrowd": 0},
                {"id": 26002, "category_id": 26, "iscrowd": 0}]
    categories = [{"id": 7, "name": "road", "isthing": 0}, {"id": 26, "name": "car", "isthing": 1}]
    name = "frankfurt_000000_000294"
    write_panoptic(tmp_path / "gtFine" / "cityscapes_panoptic_val.json",
                   tmp_path / "gtFine" / "cityscapes_panoptic_val",
                   tmp_path / "leftImg8bit" / "val" / "frankfurt" / f"{name}_leftImg8bit.png", image_id=name,
                   png_name=f"{name}_gtFine_panoptic.png", image_name=f"{name}_leftImg8bit.png", segments=segments,
                   ids=ids, categories=categories)
    sample = build_dataset("cityscapes_panoptic", root=tmp_path, split="val")[0]
    info = dataset_info("cityscapes_panoptic")
    assert info.num_classes == 19 and info.thing_classes == tuple(range(11, 19)) and info.label_divisor == 1000
    assert sample.semantic[0].tolist() == [0, 0, 13, 13, 13, 13]
    assert sample.panoptic[0].tolist() == [0, 0, 13001, 13001, 13002, 13002]
    assert sample.name == name


def test_ade20k_contiguous_ids(tmp_path) -> None:
    ids = np.zeros((H, W), dtype=np.int64)
    ids[:, :3] = 1
    ids[:, 3:] = 2
    segments = [{"id": 1, "category_id": 0, "iscrowd": 0}, {"id": 2, "category_id": 12, "iscrowd": 0}]
    categories = [{"id": 0, "name": "wall", "isthing": 0}, {"id": 12, "name": "person", "isthing": 1}]
    write_panoptic(tmp_path / "ade20k_panoptic_val.json", tmp_path / "ade20k_panoptic_val",
                   tmp_path / "images" / "validation" / "ADE_val_00000001.jpg", image_id="ADE_val_00000001",
                   png_name="ADE_val_00000001.png", image_name="ADE_val_00000001.jpg", segments=segments, ids=ids,
                   categories=categories)
    sample = build_dataset("ade20k_panoptic", root=tmp_path, split="val")[0]
    info = dataset_info("ade20k_panoptic")
    assert info.num_classes == 150 and len(info.thing_classes) == 100 and 12 in info.thing_classes
    assert sample.semantic[0].tolist() == [0, 0, 0, 12, 12, 12]
    assert sample.panoptic[0].tolist() == [0, 0, 0, 12001, 12001, 12001]


def test_unknown_category_is_an_error(tmp_path) -> None:
    coco(tmp_path)
    path = tmp_path / "annotations" / "panoptic_val2017.json"
    content = json.loads(path.read_text())
    content["categories"].append({"id": 999, "name": "dragon", "isthing": 1})
    path.write_text(json.dumps(content))
    with pytest.raises(UserError, match="category id 999"):
        build_dataset("coco_panoptic", root=tmp_path, split="val")
