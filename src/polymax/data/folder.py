"""A custom data set from plain folders: images plus any subset of semantic / panoptic / depth / normals.

Layout (``base`` = ``root/<split>`` when that folder exists, else ``root`` with an optional ``<split>.txt``
list of image stems; a flat folder without a list serves only split ``train`` or ``all``)::

    base/images/<stem>.jpg|.jpeg|.png|.bmp   RGB photos (the set of samples)
    base/semantic/<stem>.png                 8- or 16-bit class ids 0..C-1, `void_value` = ignore
    base/panoptic/<stem>.png                 RGB, R + 256·G + 256²·B = class · label_divisor + instance
    base/depth/<stem>.png | <stem>.npy       16-bit PNG × depth_scale metres, or float32 metres; 0 = invalid
    base/normals/<stem>.png                  8-bit RGB, n = v / 255 · 2 − 1, (0, 0, 0) = invalid
    dataset.yaml (in base or root)

dataset.yaml (required when semantic or panoptic labels exist)::

    name: my_rooms
    classes: [wall, floor, {name: chair, thing: true, color: [200, 40, 40]}]
    depth_scale: 0.001     # metres per 16-bit PNG unit (default: millimetres)
    min_depth: 0.001       # depth outside [min_depth, max_depth] is marked invalid (0)
    max_depth: 10.0
    label_divisor: 1000
    void_value: 255        # the value that marks void in the semantic PNGs / panoptic class
    protocol: nyu          # optional: score depth as this data set is scored (polymax.data.protocol)

Photos are turned upright by their EXIF orientation tag (as a phone or a viewer shows them); label files are
read as stored, without rotation (they carry no EXIF), so a label must match the upright photo's size.

A label folder that exists must hold a file for every image (a missing one is an error naming it); a folder
that does not exist means the data set has no such label, and training uses only the other losses.
When only panoptic labels exist, semantic is derived from them (class = panoptic // label_divisor).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from polymax.config.model import DatasetInfo
from polymax.data.images import (
    check_same_size,
    decode_normals_png,
    png_header,
    read_id_png,
    read_image,
    read_png,
    read_rgb_segment_ids,
)
from polymax.data.label_spaces import palette
from polymax.data.protocol import DepthProtocol, resolve_protocol
from polymax.data.sample import Sample
from polymax.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
LABEL_FOLDERS = ("semantic", "panoptic", "depth", "normals")
CONFIG_NAME = "dataset.yaml"


@dataclass(frozen=True)
class FolderConfig:
    info: DatasetInfo
    depth_scale: float = 0.001
    min_depth: float = 1e-3
    max_depth: float = 10.0
    void_value: int = 255
    path: Path | None = None
    protocol: DepthProtocol | None = None


def _config_path(root: Path, split: str | None = None) -> Path | None:
    for candidate in ([root / split / CONFIG_NAME] if split else []) + [root / CONFIG_NAME]:
        if candidate.is_file():
            return candidate
    return None


def read_folder_config(root: str | Path, split: str | None = None) -> FolderConfig:
    """Parse dataset.yaml (or defaults without classes when there is none)."""
    root = Path(root)
    path = _config_path(root, split)
    if path is None:
        return FolderConfig(info=DatasetInfo(name="folder", class_names=(), ignore_label=255))
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(content, dict):
        raise UserError(f"{path}: must be a mapping with keys classes, depth_scale, min_depth, max_depth")
    known = {"name", "classes", "depth_scale", "min_depth", "max_depth", "label_divisor", "void_value", "protocol"}
    unknown = sorted(set(content) - known)
    if unknown:
        raise UserError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    names, things, colours = [], [], []
    default_colours = palette(len(content.get("classes") or []))
    for index, entry in enumerate(content.get("classes") or []):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise UserError(f"{path}: class {index} must be a name or a mapping with 'name'")
        names.append(str(entry["name"]))
        if entry.get("thing", False):
            things.append(index)
        colour = entry.get("color", default_colours[index])
        if not (isinstance(colour, list | tuple) and len(colour) == 3):
            raise UserError(f"{path}: class {entry['name']!r} color must be [r, g, b]")
        colours.append(tuple(int(c) for c in colour))
    try:
        depth_scale = float(content.get("depth_scale", 0.001))
        min_depth, max_depth = float(content.get("min_depth", 1e-3)), float(content.get("max_depth", 10.0))
        divisor, void = int(content.get("label_divisor", 1000)), int(content.get("void_value", 255))
    except (TypeError, ValueError) as error:
        raise UserError(f"{path}: bad number ({error})") from None
    if depth_scale <= 0 or not 0 <= min_depth < max_depth:
        raise UserError(f"{path}: need depth_scale > 0 and 0 <= min_depth < max_depth")
    if len(names) > 255 or (void < len(names) and names):
        raise UserError(f"{path}: void_value {void} collides with class ids 0..{len(names) - 1} (max 255 classes)")
    info = DatasetInfo(name=str(content.get("name", "folder")), class_names=tuple(names), thing_classes=tuple(things),
                       colors=tuple(colours), ignore_label=255, label_divisor=divisor)
    protocol = resolve_protocol(content.get("protocol"), where=str(path)) if content.get("protocol") else None
    return FolderConfig(info=info, depth_scale=depth_scale, min_depth=min_depth, max_depth=max_depth,
                        void_value=void, path=path, protocol=protocol)


class FolderDataset(torch.utils.data.Dataset):
    """See the module docstring for the layout."""

    def __init__(self, *, root: str | Path, split: str = "train") -> None:
        root = Path(root)
        self.base = root / split if (root / split / "images").is_dir() else root
        images_dir = self.base / "images"
        if not images_dir.is_dir():
            raise UserError(f"no images folder: expected {root / split / 'images'} or {root / 'images'}")
        self.config = read_folder_config(root, split)
        self.info = self.config.info
        self.protocol = self.config.protocol
        stems = {p.stem: p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        list_file = root / f"{split}.txt"
        if self.base == root and list_file.is_file():
            wanted = [line.strip() for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
            missing = [s for s in wanted if s not in stems]
            if missing:
                raise UserError(f"{list_file}: image {missing[0]!r} not found in {images_dir}")
            self.images = [stems[s] for s in wanted]
        elif self.base == root and split not in ("train", "all"):
            raise UserError(f"{root} has no {split}/ folder and no {split}.txt list; a flat folder is the train split")
        else:
            self.images = list(stems.values())
        if not self.images:
            raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
        self.labels = tuple(name for name in LABEL_FOLDERS if (self.base / name).is_dir())
        if {"semantic", "panoptic"} & set(self.labels) and not self.info.class_names:
            raise UserError(f"{self.base} has semantic/panoptic labels but no {CONFIG_NAME} listing the classes")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        image_path = self.images[index]
        stem = image_path.stem
        image = read_image(image_path)
        size = tuple(image.shape[-2:])
        sample = Sample(image=image, name=stem)
        if "panoptic" in self.labels:
            sample.panoptic = self._panoptic(self.base / "panoptic" / f"{stem}.png", size)
        if "semantic" in self.labels:
            sample.semantic = self._semantic(self.base / "semantic" / f"{stem}.png", size)
        elif sample.panoptic is not None:
            sample.semantic = sample.panoptic // self.info.label_divisor
        if "depth" in self.labels:
            sample.depth = self._depth(stem, size)
        if "normals" in self.labels:
            path = self.base / "normals" / f"{stem}.png"
            rgb = read_png(path, bit_depth=8, channels=3, what="normals PNG")
            check_same_size(path, rgb.shape[:2], size, "normals")
            sample.normals = decode_normals_png(rgb)
        return sample

    def _classes_or_void(self, path: Path, classes: np.ndarray, what: str) -> np.ndarray:
        void = classes == self.config.void_value
        bad = (~void) & ((classes < 0) | (classes >= self.info.num_classes))
        if bad.any():
            raise UserError(f"{path}: {what} has class id {int(classes[bad][0])}, but {self.config.path} lists "
                            f"{self.info.num_classes} classes (0..{self.info.num_classes - 1}, void "
                            f"{self.config.void_value})")
        return void

    def _semantic(self, path: Path, size: tuple[int, int]) -> torch.Tensor:
        labels = read_id_png(path, "semantic PNG")
        check_same_size(path, labels.shape, size, "semantic label")
        void = self._classes_or_void(path, labels, "semantic label")
        return torch.from_numpy(np.where(void, 255, labels))

    def _panoptic(self, path: Path, size: tuple[int, int]) -> torch.Tensor:
        ids = read_rgb_segment_ids(path)
        check_same_size(path, ids.shape, size, "panoptic label")
        divisor = self.info.label_divisor
        void = self._classes_or_void(path, ids // divisor, "panoptic label")
        return torch.from_numpy(np.where(void, 255 * divisor, ids))

    def _depth(self, stem: str, size: tuple[int, int]) -> torch.Tensor:
        npy, png = self.base / "depth" / f"{stem}.npy", self.base / "depth" / f"{stem}.png"
        if npy.is_file():
            try:
                metres = np.load(npy, allow_pickle=False)
            except (ValueError, OSError) as error:
                raise UserError(f"{npy}: cannot read as a .npy array ({error})") from None
            if metres.ndim != 2 or not np.issubdtype(metres.dtype, np.floating):
                raise UserError(f"{npy}: depth .npy must be a 2-D float array in metres, got {metres.dtype} "
                                f"{metres.shape}")
            check_same_size(npy, metres.shape, size, "depth")
            metres = metres.astype(np.float32)
        else:
            raw = read_png(png, bit_depth=16, channels=1, what="depth PNG (16-bit, see depth_scale)")
            if png_header(png)[3] != 0:
                raise UserError(f"{png}: depth PNG must be single-channel 16-bit grey")
            check_same_size(png, raw.shape, size, "depth")
            metres = raw.astype(np.float32) * self.config.depth_scale
        valid = np.isfinite(metres) & (metres >= self.config.min_depth) & (metres <= self.config.max_depth)
        return torch.from_numpy(np.where(valid, metres, 0.0).astype(np.float32))
