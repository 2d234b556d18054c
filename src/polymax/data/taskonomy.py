"""Taskonomy in its release folder layout (depth_normals_conventions §1.5, §6.4).

``root/<task>/<building>/point_<p>_view_<v>_domain_<task>.png`` for task in ``rgb`` (8-bit RGB),
``depth_zbuffer`` (16-bit, 1/512 m per unit, 65535 = no geometry), ``normal`` (8-bit RGB, n = v / 255 · 2 − 1,
mid-grey = invalid), ``segment_semantic`` (8-bit, 0 = uncertain → ignore, 1 = background, 2..17 = objects;
we shift to 0..16) and optionally ``mask_valid`` (8-bit, 0 = missing geometry; the file keeps the
``depth_zbuffer`` name, ``…_domain_mask_valid.png`` is also accepted). A label folder that exists must hold
a file for every RGB frame; a missing one is an error naming it.

Splits are by building. ``split_file`` (default ``root/splits.csv``) is either the official CSV
(``id,train,val,test`` with 1 marking membership) or a text file with one building per line for this
split. ``split="all"`` uses every building folder under ``rgb/``. Normals are returned in the release's
own axis convention (not re-oriented).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from polymax.data.images import (
    check_same_size,
    decode_normals_png,
    png_header,
    read_image,
    read_png,
    require_file,
)
from polymax.data.label_spaces import taskonomy_info
from polymax.data.sample import Sample
from polymax.errors import UserError

DEPTH_UNITS_PER_METRE = 512.0
DEPTH_INVALID = 65535
NUM_SEMANTIC_LABELS = 18  # raw values 0..17
LABEL_TASKS = {"depth": "depth_zbuffer", "normals": "normal", "semantic": "segment_semantic"}


def read_buildings(path: Path, split: str) -> list[str]:
    """Building names of ``split`` from an official CSV (id,train,val,test) or a one-per-line text file."""
    require_file(path, "Taskonomy split file (pass split_file= or put splits.csv in the root)")
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0] if text.strip() else ""
    if "," in first:
        rows = list(csv.DictReader(text.splitlines()))
        header = [h.strip() for h in (rows[0].keys() if rows else first.split(","))]
        if "id" not in header or split not in header:
            raise UserError(f"{path}: CSV needs columns 'id' and {split!r} (found {header})")
        buildings = []
        for row in rows:
            flag = (row.get(split) or "").strip()
            if flag not in ("0", "1"):
                raise UserError(f"{path}: building {row.get('id')!r} has {split}={flag!r}; expected 0 or 1")
            if flag == "1":
                buildings.append(row["id"].strip())
    else:
        buildings = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not buildings:
        raise UserError(f"{path}: lists no building for split {split!r}")
    return buildings


class Taskonomy(torch.utils.data.Dataset):
    """Taskonomy frames of the split's buildings, with whichever of depth / normals / semantic exist."""

    def __init__(self, *, root: str | Path, split: str = "train", split_file: str | Path | None = None,
                 tasks: tuple[str, ...] | None = None, max_depth: float | None = None) -> None:
        self.root = Path(root)
        if not (self.root / "rgb").is_dir():
            raise UserError(f"Taskonomy folder {self.root / 'rgb'} not found; root must contain rgb/<building>/")
        if tasks is None:
            tasks = tuple(t for t, folder in LABEL_TASKS.items() if (self.root / folder).is_dir())
        unknown = sorted(set(tasks) - set(LABEL_TASKS))
        if unknown:
            raise UserError(f"unknown Taskonomy label(s) {unknown}; choose from {sorted(LABEL_TASKS)}")
        for task in tasks:
            if not (self.root / LABEL_TASKS[task]).is_dir():
                raise UserError(f"Taskonomy {task} requested but folder {self.root / LABEL_TASKS[task]} is missing")
        self.tasks, self.max_depth, self.split = tuple(tasks), max_depth, split
        self.info = taskonomy_info()
        if split == "all":
            buildings = sorted(p.name for p in (self.root / "rgb").iterdir() if p.is_dir())
        else:
            buildings = read_buildings(Path(split_file) if split_file else self.root / "splits.csv", split)
        self.frames: list[tuple[str, str]] = []  # (building, "point_<p>_view_<v>")
        for building in buildings:
            folder = self.root / "rgb" / building
            if not folder.is_dir():
                raise UserError(f"Taskonomy building folder missing: {folder} (listed in the {split} split)")
            for path in sorted(folder.glob("*_domain_rgb.png")):
                self.frames.append((building, path.name[: -len("_domain_rgb.png")]))
        if not self.frames:
            raise UserError(f"no Taskonomy frames (*_domain_rgb.png) for split {split!r} under {self.root / 'rgb'}")

    def __len__(self) -> int:
        return len(self.frames)

    def _path(self, folder: str, building: str, stem: str, domain: str) -> Path:
        return self.root / folder / building / f"{stem}_domain_{domain}.png"

    def __getitem__(self, index: int) -> Sample:
        building, stem = self.frames[index]
        image_path = self._path("rgb", building, stem, "rgb")
        image = read_image(image_path)
        size = tuple(image.shape[-2:])
        valid = self._mask_valid(building, stem, size)
        depth = normals = semantic = None
        if "depth" in self.tasks:
            path = self._path("depth_zbuffer", building, stem, "depth_zbuffer")
            raw = read_png(path, bit_depth=16, channels=1, what="Taskonomy depth_zbuffer PNG")
            check_same_size(path, raw.shape, size, "depth")
            depth_valid = raw != DEPTH_INVALID
            valid = depth_valid if valid is None else valid & depth_valid
            metres = raw.astype(np.float32) / DEPTH_UNITS_PER_METRE
            keep = valid if self.max_depth is None else valid & (metres <= self.max_depth)
            depth = torch.from_numpy(np.where(keep, metres, 0.0).astype(np.float32))
        if "normals" in self.tasks:
            path = self._path("normal", building, stem, "normal")
            rgb = read_png(path, bit_depth=8, channels=3, what="Taskonomy normal PNG")
            check_same_size(path, rgb.shape[:2], size, "normals")
            normals = decode_normals_png(rgb)
            if valid is not None:
                normals = normals * torch.from_numpy(valid)[None]
        if "semantic" in self.tasks:
            semantic = self._semantic(self._path("segment_semantic", building, stem, "segment_semantic"), size)
        return Sample(image=image, semantic=semantic, depth=depth, normals=normals, name=f"{building}/{stem}")

    def _mask_valid(self, building: str, stem: str, size: tuple[int, int]) -> np.ndarray | None:
        for domain in ("depth_zbuffer", "mask_valid"):
            path = self._path("mask_valid", building, stem, domain)
            if path.is_file():
                mask = read_png(path, bit_depth=8, channels=1, what="Taskonomy mask_valid PNG")
                check_same_size(path, mask.shape, size, "mask_valid")
                return mask > 0
        return None

    def _semantic(self, path: Path, size: tuple[int, int]) -> torch.Tensor:
        require_file(path, "Taskonomy segment_semantic PNG")
        channels = {0: 1, 3: 1, 2: 3}.get(png_header(path)[3], 0)
        if channels not in (1, 3):
            raise UserError(f"{path}: segment_semantic must be an 8-bit grey or RGB PNG of label ids")
        raw = read_png(path, bit_depth=8, channels=channels, what="Taskonomy segment_semantic PNG").astype(np.int64)
        if channels == 3:
            if not (np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2])):
                raise UserError(f"{path}: RGB segment_semantic must repeat the label id in all three channels")
            raw = raw[..., 0]
        check_same_size(path, raw.shape, size, "semantic label")
        if raw.max() >= NUM_SEMANTIC_LABELS:
            raise UserError(f"{path}: label {raw.max()} is not a Taskonomy semantic id (0..17)")
        return torch.from_numpy(np.where(raw == 0, 255, raw - 1))
