"""Data-set names, label spaces and the packaged metadata."""

from __future__ import annotations

import pytest

from polymax.data import DATASET_NAMES, build_dataset, dataset_info
from polymax.data.catalog import load_metadata
from polymax.errors import UserError


@pytest.mark.parametrize("name", [n for n in DATASET_NAMES if n != "folder"])
def test_every_dataset_has_a_label_space(name) -> None:
    info = dataset_info(name)
    assert info.ignore_label == 255 and info.num_classes > 0
    assert len(info.colors) == info.num_classes
    assert all(0 <= t < info.num_classes for t in info.thing_classes)


def test_known_sizes_and_divisors() -> None:
    assert (dataset_info("coco_panoptic").num_classes, dataset_info("coco_panoptic").label_divisor) == (133, 256)
    assert dataset_info("coco_panoptic").thing_classes == tuple(range(80))
    assert dataset_info("cityscapes_panoptic").num_classes == 19
    assert dataset_info("cityscapes_panoptic").max_thing_id == 256
    assert dataset_info("ade20k_panoptic").num_classes == 150
    assert dataset_info("nyuv2").num_classes == 40 and dataset_info("nyuv2").thing_classes == ()


def test_metadata_is_package_data() -> None:
    mapping = load_metadata("nyu40_class_mapping.json")
    assert len(mapping["map_894_to_40"]) == 894 and len(mapping["names_40"]) == 40


def test_unknown_name_and_missing_root() -> None:
    with pytest.raises(UserError, match="unknown data set 'kitti'"):
        build_dataset("kitti", root=".")
    with pytest.raises(UserError, match="needs --root"):
        build_dataset("nyuv2")
    with pytest.raises(UserError, match="unknown data set"):
        dataset_info("kitti")


def test_synth_builds_without_root() -> None:
    dataset = build_dataset("synth", split="train", num_samples=3, size=(33, 33))
    assert len(dataset) == 3 and dataset[0].image.shape == (3, 33, 33)
