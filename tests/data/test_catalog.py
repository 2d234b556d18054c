"""Data-set names, label spaces and the packaged metadata."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from polymax.data import DATASET_NAMES, build_dataset, dataset_info, generation_options
from polymax.data.catalog import load_metadata
from polymax.errors import UserError


# folder reads its classes from its root; list files carry depth only (no classes).
@pytest.mark.parametrize("name", [n for n in DATASET_NAMES if n not in ("folder", "list")])
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


def test_generation_options_come_from_the_catalogue() -> None:
    assert generation_options("synth", size=[24, 32]) == {"size": (24, 32)}
    assert generation_options("synth", size=(24, 32), evaluation=True) == {"size": (24, 32), "num_samples": 16}
    for name in DATASET_NAMES:
        if name != "synth":
            assert generation_options(name, size=(24, 32), evaluation=True) == {}
    # An unknown name is left to build_dataset to report, so callers keep its error message.
    assert generation_options("kitti", size=(24, 32)) == {}


def test_catalogue_still_exports_the_label_space_helpers() -> None:
    from polymax.data import catalog, label_spaces

    for name in ("load_metadata", "palette", "coco_categories", "cityscapes_train_categories", "ade20k_categories",
                 "IGNORE_LABEL", "TASKONOMY_CLASS_NAMES"):
        assert getattr(catalog, name) is getattr(label_spaces, name)
    assert len(catalog.coco_categories()) == 133 and len(catalog.palette(5)) == 5


@pytest.mark.parametrize("module", ["folder", "nyuv2", "taskonomy", "panoptic_formats", "label_spaces"])
def test_loaders_do_not_import_the_catalogue(module) -> None:
    # Only the catalogue imports loaders; an import back would close the circle again.
    source = Path(importlib.import_module(f"polymax.data.{module}").__file__).read_text(encoding="utf-8")
    assert "polymax.data.catalog" not in source and "from polymax.data import" not in source
