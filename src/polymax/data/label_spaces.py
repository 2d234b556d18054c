"""Label spaces of the named data sets, built from the JSON metadata shipped in ``polymax/data/metadata``.

A leaf module: it imports no loader, so the loaders and the catalogue can both depend on it without a
circle, and asking for a label space never imports torch, PIL or h5py.
"""

from __future__ import annotations

import colorsys
import json
from functools import cache
from importlib import resources
from typing import Any

from polymax.config.model import DatasetInfo

IGNORE_LABEL = 255

# Taskonomy segment_semantic: 0 = uncertain (ignored), 1 = background, 2..17 = 16 COCO object classes
# (FCIS pseudo-labels). The README gives the count but the per-index names were not verified; the indices
# are exact, the names below are placeholders until checked against the release.
TASKONOMY_CLASS_NAMES = ("background",) + tuple(f"object_{index}" for index in range(2, 18))


@cache
def load_metadata(file_name: str) -> Any:
    """A JSON file shipped in ``polymax/data/metadata`` (never read from the source tree's shared/)."""
    text = resources.files("polymax.data").joinpath("metadata", file_name).read_text(encoding="utf-8")
    return json.loads(text)


def palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """``count`` distinct, deterministic RGB colours (golden-ratio hue walk) for data sets without colours."""
    colours = []
    for index in range(count):
        red, green, blue = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.65, 0.95 - 0.25 * (index % 3) / 2)
        colours.append((round(red * 255), round(green * 255), round(blue * 255)))
    return tuple(colours)


def coco_categories() -> list[dict]:
    """The 133 COCO panoptic categories in contiguous order (sorted by id: 80 things, then 53 stuff)."""
    return sorted(load_metadata("coco_panoptic_categories.json"), key=lambda c: c["id"])


def cityscapes_train_categories() -> list[dict]:
    """The 19 Cityscapes train classes in train-id order, with ``isthing`` from ``hasInstances``."""
    labels = [c for c in load_metadata("cityscapes_labels.json") if 0 <= c["trainId"] < IGNORE_LABEL]
    by_train_id = {c["trainId"]: c for c in labels}
    return [{"name": by_train_id[t]["name"], "isthing": int(by_train_id[t]["hasInstances"]),
             "color": by_train_id[t]["color"], "id": by_train_id[t]["id"]} for t in sorted(by_train_id)]


def ade20k_categories() -> list[dict]:
    """The 150 ADE20K panoptic categories (ids 0..149 as in the common JSON+PNG conversion)."""
    return sorted(load_metadata("ade20k_panoptic_categories.json"), key=lambda c: c["id"])


def _panoptic_info(name: str, categories: list[dict], *, label_divisor: int, max_thing_id: int) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        class_names=tuple(c["name"] for c in categories),
        thing_classes=tuple(i for i, c in enumerate(categories) if c["isthing"]),
        colors=tuple(tuple(c["color"]) for c in categories),
        ignore_label=IGNORE_LABEL, label_divisor=label_divisor, max_thing_id=max_thing_id)


def coco_panoptic_info() -> DatasetInfo:
    return _panoptic_info("coco_panoptic", coco_categories(), label_divisor=256, max_thing_id=128)


def cityscapes_panoptic_info() -> DatasetInfo:
    return _panoptic_info("cityscapes_panoptic", cityscapes_train_categories(), label_divisor=1000, max_thing_id=256)


def ade20k_panoptic_info() -> DatasetInfo:
    return _panoptic_info("ade20k_panoptic", ade20k_categories(), label_divisor=1000, max_thing_id=256)


def nyuv2_info() -> DatasetInfo:
    """NYUD-v2's 40-class label space; the files carry no colours, so they are generated."""
    names = tuple(load_metadata("nyu40_class_mapping.json")["names_40"])
    return DatasetInfo(name="nyuv2", class_names=names, colors=palette(len(names)), ignore_label=IGNORE_LABEL)


def taskonomy_info() -> DatasetInfo:
    return DatasetInfo(name="taskonomy", class_names=TASKONOMY_CLASS_NAMES, colors=palette(len(TASKONOMY_CLASS_NAMES)),
                       ignore_label=IGNORE_LABEL)
