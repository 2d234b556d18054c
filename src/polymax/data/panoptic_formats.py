"""COCO-format panoptic annotations (JSON + PNG) for COCO, Cityscapes and ADE20K.

The PNG stores one segment id per pixel as RGB, id = R + 256·G + 256²·B (0 = void); the JSON's
``annotations[*].segments_info`` gives each id a ``category_id`` and ``iscrowd``. We decode to our
convention: semantic = contiguous class 0..C−1 (255 = void), panoptic = class · label_divisor + instance
(instances 1.. numbered per class in segments_info order; 0 for stuff and crowd), crowd = iscrowd pixels
(they keep their class in semantic and panoptic instance 0, and are excluded from matching downstream).
A PNG segment id missing from segments_info, or a category id outside the data set, is an error.

Default locations (each overridable with json_file= / panoptic_dir= / image_dir=):
- COCO: ``annotations/panoptic_{split}2017.json``, ``annotations/panoptic_{split}2017/``, ``{split}2017/``.
- Cityscapes: ``gtFine/cityscapes_panoptic_{split}.json``, ``gtFine/cityscapes_panoptic_{split}/``,
  images ``leftImg8bit/{split}/{city}/``; category ids are Cityscapes label ids, mapped to the 19 train ids.
- ADE20K: ``ade20k_panoptic_{split}.json``, ``ade20k_panoptic_{split}/``, ``images/{training|validation}/``
  (the common conversion of the scene-parsing release; category ids 0..149).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from polymax.config.model import DatasetInfo
from polymax.data.images import check_same_size, read_image, read_rgb_segment_ids, require_file
from polymax.data.label_spaces import (
    ade20k_categories,
    ade20k_panoptic_info,
    cityscapes_panoptic_info,
    cityscapes_train_categories,
    coco_categories,
    coco_panoptic_info,
    load_metadata,
)
from polymax.data.sample import Sample
from polymax.errors import UserError


def read_json(path: Path, what: str) -> dict:
    require_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None


class PanopticJsonDataset(torch.utils.data.Dataset):
    """Images + COCO-format panoptic PNGs. ``category_to_class`` maps JSON category id → contiguous class
    (255 = treat as void, e.g. Cityscapes categories without a train id)."""

    def __init__(self, *, json_file: Path, panoptic_dir: Path, image_path: callable, info: DatasetInfo,
                 category_to_class: dict[int, int]) -> None:
        self.json_file, self.panoptic_dir, self.info = Path(json_file), Path(panoptic_dir), info
        self.category_to_class = category_to_class
        self.thing_classes = frozenset(info.thing_classes)
        content = read_json(self.json_file, "panoptic annotation JSON")
        for key in ("images", "annotations"):
            if key not in content:
                raise UserError(f"{self.json_file}: has no {key!r} list; is it a panoptic annotation file?")
        if not self.panoptic_dir.is_dir():
            raise UserError(f"panoptic PNG folder not found: {self.panoptic_dir}")
        for category in content.get("categories", []):
            if category["id"] not in category_to_class:
                raise UserError(f"{self.json_file}: category id {category['id']} ({category.get('name')!r}) is "
                                f"not one of the {info.num_classes} {info.name} classes")
        images = {image["id"]: image for image in content["images"]}
        self.records = []
        for annotation in content["annotations"]:
            image = images.get(annotation["image_id"])
            if image is None:
                raise UserError(f"{self.json_file}: annotation for unknown image_id {annotation['image_id']!r}")
            self.records.append((image_path(image), self.panoptic_dir / annotation["file_name"],
                                 annotation["segments_info"], str(annotation["image_id"])))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        image_path, png_path, segments, name = self.records[index]
        image = read_image(image_path)
        ids = read_rgb_segment_ids(png_path)
        check_same_size(png_path, ids.shape, tuple(image.shape[-2:]), "panoptic PNG")
        semantic, panoptic, crowd = self.decode(ids, segments, png_path)
        return Sample(image=image, semantic=torch.from_numpy(semantic), panoptic=torch.from_numpy(panoptic),
                      crowd=torch.from_numpy(crowd), name=name)

    def decode(self, ids: np.ndarray, segments: list[dict], png_path: Path) -> tuple[np.ndarray, ...]:
        """Segment-id map (H, W) → semantic int64, panoptic int64, crowd bool, all (H, W)."""
        divisor, void = self.info.label_divisor, self.info.ignore_label
        unique, inverse = np.unique(ids, return_inverse=True)
        # Per unique segment id: its class, panoptic id and crowd flag; then one gather paints the image.
        seg_class = np.full(len(unique), void, dtype=np.int64)
        seg_panoptic = np.full(len(unique), void * divisor, dtype=np.int64)
        seg_crowd = np.zeros(len(unique), dtype=bool)
        position = {int(u): i for i, u in enumerate(unique)}
        known, next_instance = {0}, {}
        for segment in segments:
            segment_id, category = int(segment["id"]), int(segment["category_id"])
            known.add(segment_id)
            if category not in self.category_to_class:
                raise UserError(f"{self.json_file}: segment {segment_id} of {png_path.name} has unknown "
                                f"category id {category}")
            label = self.category_to_class[category]
            if segment_id not in position or label == void:
                continue
            slot = position[segment_id]
            seg_class[slot] = label
            if segment.get("iscrowd", 0):
                seg_crowd[slot], seg_panoptic[slot] = True, label * divisor
            elif label in self.thing_classes:
                next_instance[label] = next_instance.get(label, 0) + 1
                seg_panoptic[slot] = label * divisor + next_instance[label]
            else:
                seg_panoptic[slot] = label * divisor
        unlisted = sorted(int(u) for u in unique if int(u) not in known)
        if unlisted:
            raise UserError(f"{png_path}: segment id(s) {unlisted[:5]} are not in segments_info of "
                            f"{self.json_file.name}; the PNG and JSON do not belong together")
        inverse = inverse.reshape(ids.shape)
        return seg_class[inverse], seg_panoptic[inverse], seg_crowd[inverse]


def coco_panoptic(*, root: str | Path, split: str = "train", json_file: str | Path | None = None,
                  panoptic_dir: str | Path | None = None, image_dir: str | Path | None = None) -> PanopticJsonDataset:
    root = Path(root)
    categories = coco_categories()
    image_dir = Path(image_dir) if image_dir else root / f"{split}2017"
    return PanopticJsonDataset(
        json_file=Path(json_file) if json_file else root / "annotations" / f"panoptic_{split}2017.json",
        panoptic_dir=Path(panoptic_dir) if panoptic_dir else root / "annotations" / f"panoptic_{split}2017",
        image_path=lambda image: image_dir / image["file_name"], info=coco_panoptic_info(),
        category_to_class={c["id"]: i for i, c in enumerate(categories)})


def cityscapes_panoptic(*, root: str | Path, split: str = "train", json_file: str | Path | None = None,
                        panoptic_dir: str | Path | None = None,
                        image_dir: str | Path | None = None) -> PanopticJsonDataset:
    root = Path(root)
    train_ids = {c["id"]: i for i, c in enumerate(cityscapes_train_categories())}
    # Every Cityscapes label id is accepted; ids without a train id (ego vehicle, …) become void.
    labels = load_metadata("cityscapes_labels.json")
    category_to_class = {label["id"]: train_ids.get(label["id"], 255) for label in labels}
    image_dir = Path(image_dir) if image_dir else root / "leftImg8bit" / split
    return PanopticJsonDataset(
        json_file=Path(json_file) if json_file else root / "gtFine" / f"cityscapes_panoptic_{split}.json",
        panoptic_dir=Path(panoptic_dir) if panoptic_dir else root / "gtFine" / f"cityscapes_panoptic_{split}",
        image_path=lambda image: image_dir / image["file_name"].split("_")[0] / image["file_name"],
        info=cityscapes_panoptic_info(), category_to_class=category_to_class)


def ade20k_panoptic(*, root: str | Path, split: str = "train", json_file: str | Path | None = None,
                    panoptic_dir: str | Path | None = None, image_dir: str | Path | None = None) -> PanopticJsonDataset:
    root = Path(root)
    folder = {"train": "training", "val": "validation"}.get(split)
    if folder is None and image_dir is None:
        raise UserError(f"ADE20K panoptic split {split!r} does not exist; use train or val")
    image_dir = Path(image_dir) if image_dir else root / "images" / folder
    return PanopticJsonDataset(
        json_file=Path(json_file) if json_file else root / f"ade20k_panoptic_{split}.json",
        panoptic_dir=Path(panoptic_dir) if panoptic_dir else root / f"ade20k_panoptic_{split}",
        image_path=lambda image: image_dir / image["file_name"], info=ade20k_panoptic_info(),
        category_to_class={c["id"]: i for i, c in enumerate(ade20k_categories())})
