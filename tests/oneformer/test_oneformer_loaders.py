"""Joint OneFormer training on every panoptic loader's format: two steps of the tiny model on two images of COCO,
Cityscapes and ADE20K panoptic files written in the official layout (JSON + RGB-encoded PNGs), the model taking
the data set's label space."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from oneformer_helpers import oneformer_config
from PIL import Image

from polymax.engine.assemble import build_collate, build_train_set, build_training_model
from polymax.engine.objective import build_objective
from polymax.engine.train import fit

H, W = 40, 48


def _encode(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def _write(json_path, png_dir, image_paths, names, *, stuff: tuple[int, int], thing: tuple[int, int]) -> None:
    """Two images: stuff (segment id, category) on the left half, two instances of the thing category right."""
    stuff_id, stuff_category = stuff
    thing_base, thing_category = thing
    ids = np.full((H, W), stuff_id, dtype=np.int64)
    ids[: H // 2, W // 2:] = thing_base
    ids[H // 2:, W // 2:] = thing_base + 1
    segments = [{"id": stuff_id, "category_id": stuff_category, "iscrowd": 0},
                {"id": thing_base, "category_id": thing_category, "iscrowd": 0},
                {"id": thing_base + 1, "category_id": thing_category, "iscrowd": 0}]
    png_dir.mkdir(parents=True, exist_ok=True)
    content = {"images": [], "annotations": [], "categories": [
        {"id": stuff_category, "name": "stuff", "isthing": 0}, {"id": thing_category, "name": "thing", "isthing": 1}]}
    for index, (image_path, (image_name, png_name)) in enumerate(zip(image_paths, names, strict=True)):
        image_path.parent.mkdir(parents=True, exist_ok=True)
        rgb = np.zeros((H, W, 3), dtype=np.uint8) + 60
        rgb[:, W // 2:] = 200                      # the things are brighter than the stuff
        Image.fromarray(rgb).save(image_path)
        Image.fromarray(_encode(ids)).save(png_dir / png_name)
        image_id = image_name.rsplit(".", 1)[0] + str(index)
        content["images"].append({"id": image_id, "file_name": image_name, "height": H, "width": W})
        content["annotations"].append({"image_id": image_id, "file_name": png_name, "segments_info": segments})
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(content))


def _coco(root):
    names = [(f"00000000000{i}.jpg", f"00000000000{i}.png") for i in (1, 2)]
    _write(root / "annotations" / "panoptic_train2017.json", root / "annotations" / "panoptic_train2017",
           [root / "train2017" / n for n, _ in names], names, stuff=(70000, 92), thing=(300, 1))


def _cityscapes(root):
    names = [(f"aachen_00000{i}_000019_leftImg8bit.png", f"aachen_00000{i}_000019_gtFine_panoptic.png")
             for i in (1, 2)]
    _write(root / "gtFine" / "cityscapes_panoptic_train.json", root / "gtFine" / "cityscapes_panoptic_train",
           [root / "leftImg8bit" / "train" / "aachen" / n for n, _ in names], names, stuff=(7, 7),
           thing=(26001, 26))


def _ade20k(root):
    names = [(f"ADE_train_0000000{i}.jpg", f"ADE_train_0000000{i}.png") for i in (1, 2)]
    _write(root / "ade20k_panoptic_train.json", root / "ade20k_panoptic_train",
           [root / "images" / "training" / n for n, _ in names], names, stuff=(1, 0), thing=(2, 12))


@pytest.mark.parametrize("dataset, write", [("coco_panoptic", _coco), ("cityscapes_panoptic", _cityscapes),
                                            ("ade20k_panoptic", _ade20k)])
def test_joint_training_runs_on_the_panoptic_loader(tmp_path, dataset, write):
    write(tmp_path / "data")
    config = oneformer_config(tmp_path / "run", "model.preset=oneformer_kmax_tiny_synth", f"data.dataset={dataset}",
                              f"data.root={tmp_path / 'data'}", "data.crop_size=[33,33]", "steps=2",
                              "data.batch_size=2", "loss.inst_disc_samples=64", "precise_bn_batches=0")
    model = build_training_model(config)
    assert model.config.dataset.name == dataset           # the data set's label space, not the synthetic one
    result = fit(config, model=model, objective=build_objective(model.config, config),
                 train_set=build_train_set(config, model.config), collate_fn=build_collate(model.config))
    assert result.step == 2 and all(math.isfinite(loss) and loss > 0 for loss in result.losses)


def _folder(root):
    """The custom-folder layout (polymax.data.folder): images/, panoptic/ RGB-encoded class·divisor + instance
    PNGs and dataset.yaml with a stuff and a thing class; three images, one of them without the thing."""
    (root / "images").mkdir(parents=True)
    (root / "panoptic").mkdir()
    (root / "dataset.yaml").write_text("name: my_rooms\nlabel_divisor: 1000\n"
                                       "classes: [wall, {name: chair, thing: true}]\n")
    for index in range(3):
        ids = np.zeros((H, W), dtype=np.int64)                          # class 0 (wall), stuff: instance 0
        if index < 2:
            ids[: H // 2, W // 2:] = 1 * 1000 + 1                       # two chairs (class 1) on the right
            ids[H // 2:, W // 2:] = 1 * 1000 + 2
        ids[:2] = 255 * 1000                                            # a void strip (void_value 255)
        rgb = np.zeros((H, W, 3), dtype=np.uint8) + 60
        rgb[:, W // 2:] = 200 if index < 2 else 60
        Image.fromarray(rgb).save(root / "images" / f"room{index}.png")
        Image.fromarray(_encode(ids)).save(root / "panoptic" / f"room{index}.png")


def test_joint_training_runs_on_the_folder_loader(tmp_path):
    _folder(tmp_path / "data")
    config = oneformer_config(tmp_path / "run", "model.preset=oneformer_kmax_tiny_synth", "data.dataset=folder",
                              f"data.root={tmp_path / 'data'}", "data.crop_size=[33,33]", "steps=2",
                              "data.batch_size=2", "loss.inst_disc_samples=64", "precise_bn_batches=0")
    model = build_training_model(config)
    assert model.config.dataset.class_names == ("wall", "chair")      # the folder's dataset.yaml label space
    assert model.config.dataset.thing_classes == (1,)
    objective = build_objective(model.config, config)
    result = fit(config, model=model, objective=objective, train_set=build_train_set(config, model.config),
                 collate_fn=build_collate(model.config))
    assert result.step == 2 and all(math.isfinite(loss) and loss > 0 for loss in result.losses)
