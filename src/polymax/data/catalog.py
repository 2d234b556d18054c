"""Data-set names → constructors and label-space descriptions.

``build_dataset(name, root=..., split=...)`` returns a sequence of :class:`~polymax.data.sample.Sample`
(before augmentation, original resolution). ``dataset_info(name)`` returns the
:class:`~polymax.config.model.DatasetInfo` a model needs (classes, things, colours, ignore 255, label divisor).
Each loader module is imported only when its name is asked for, so ``import polymax.data`` stays cheap and
the optional dependency h5py is needed only for NYUD-v2.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from polymax.config.model import DatasetInfo
from polymax.errors import UserError

DATASET_NAMES = ("synth", "nyuv2", "taskonomy", "coco_panoptic", "cityscapes_panoptic", "ade20k_panoptic", "folder")
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


def _panoptic_info(name: str, categories: list[dict], *, label_divisor: int, max_thing_id: int) -> DatasetInfo:
    return DatasetInfo(
        name=name,
        class_names=tuple(c["name"] for c in categories),
        thing_classes=tuple(i for i, c in enumerate(categories) if c["isthing"]),
        colors=tuple(tuple(c["color"]) for c in categories),
        ignore_label=IGNORE_LABEL, label_divisor=label_divisor, max_thing_id=max_thing_id)


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


def dataset_info(name: str, *, root: str | None = None) -> DatasetInfo:
    """Label-space description of a data set. ``folder`` reads its classes from ``root``'s YAML."""
    if name == "coco_panoptic":
        return _panoptic_info(name, coco_categories(), label_divisor=256, max_thing_id=128)
    if name == "cityscapes_panoptic":
        return _panoptic_info(name, cityscapes_train_categories(), label_divisor=1000, max_thing_id=256)
    if name == "ade20k_panoptic":
        return _panoptic_info(name, ade20k_categories(), label_divisor=1000, max_thing_id=256)
    if name == "nyuv2":
        names = tuple(load_metadata("nyu40_class_mapping.json")["names_40"])
        return DatasetInfo(name=name, class_names=names, colors=palette(len(names)), ignore_label=IGNORE_LABEL)
    if name == "taskonomy":
        return DatasetInfo(name=name, class_names=TASKONOMY_CLASS_NAMES, colors=palette(len(TASKONOMY_CLASS_NAMES)),
                           ignore_label=IGNORE_LABEL)
    if name == "synth":
        from polymax.data.synthetic import SYNTH_INFO
        return SYNTH_INFO
    if name == "folder":
        if root is None:
            raise UserError("dataset_info('folder') needs root= (the folder with dataset.yaml)")
        from polymax.data.folder import read_folder_config
        return read_folder_config(root).info
    raise UserError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def build_dataset(name: str, *, root: str | None = None, split: str = "train", skip_bad: bool = False,
                  **options: Any) -> Sequence:
    """A sequence of Samples for data set ``name`` (one of DATASET_NAMES) under ``root``.

    options go to the loader (e.g. ``normals_dir`` for NYUD-v2, ``split_file`` for Taskonomy,
    ``size`` / ``num_samples`` / ``seed`` for synth). With ``skip_bad=True`` a sample whose files are
    missing or malformed is skipped (the next good one is returned) and recorded in ``.skipped``.
    """
    if name != "synth" and root is None:
        raise UserError(f"data set {name!r} needs --root / root= pointing at its files")
    if name == "synth":
        from polymax.data.synthetic import SyntheticScenes
        dataset = SyntheticScenes(split=split, **options)
    elif name == "nyuv2":
        from polymax.data.nyuv2 import NYUDepthV2
        dataset = NYUDepthV2(root=root, split=split, **options)
    elif name == "taskonomy":
        from polymax.data.taskonomy import Taskonomy
        dataset = Taskonomy(root=root, split=split, **options)
    elif name in ("coco_panoptic", "cityscapes_panoptic", "ade20k_panoptic"):
        from polymax.data import panoptic_formats
        constructor = {"coco_panoptic": panoptic_formats.coco_panoptic,
                       "cityscapes_panoptic": panoptic_formats.cityscapes_panoptic,
                       "ade20k_panoptic": panoptic_formats.ade20k_panoptic}[name]
        dataset = constructor(root=root, split=split, **options)
    elif name == "folder":
        from polymax.data.folder import FolderDataset
        dataset = FolderDataset(root=root, split=split, **options)
    else:
        raise UserError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return SkipBadSamples(dataset) if skip_bad else dataset


class SkipBadSamples(Sequence):
    """Wraps a data set: a sample that raises UserError is replaced by the next readable one.

    ``skipped`` maps index → error message (per process: each data-loader worker keeps its own record).
    Nothing is mislabelled: a bad sample is dropped, never patched.
    """

    def __init__(self, dataset: Sequence) -> None:
        self.dataset = dataset
        self.skipped: dict[int, str] = {}
        self.info = getattr(dataset, "info", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        count = len(self.dataset)
        if not -count <= index < count:
            raise IndexError(index)
        for step in range(count):
            position = (index + step) % count
            try:
                return self.dataset[position]
            except UserError as error:
                self.skipped[position] = str(error)
        raise UserError(f"every sample of the data set is unreadable; first error: {next(iter(self.skipped.values()))}")

    def summary(self) -> dict[str, Any]:
        return {"skipped": len(self.skipped), "errors": [self.skipped[i] for i in sorted(self.skipped)[:10]]}
