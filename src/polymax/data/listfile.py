"""Depth data sets described by list files, one sample per line, as the BTS / AdaBins split files are written.

Each line: ``rgb_path depth_path [focal]``, paths relative to ``root`` (a leading ``/`` is ignored, as in
``nyudepthv2_train_files_with_gt.txt``); ``depth_path`` ``None`` marks a frame without ground truth (KITTI),
read as all-invalid depth. The list of split ``S`` is ``root/S.txt`` unless ``lists`` maps S to another file
(relative to root or absolute). Depth images: 16-bit PNG × ``depth_scale`` metres (NYU 0.001, KITTI 1/256) or
float ``.npy`` metres; 0 = invalid. ``depth_root`` holds the depth files when they live apart from the photos
(the KITTI ``gt_path``). ``protocol`` (``nyu``, ``kitti``) with optional ``eval_crop`` / ``min_depth`` /
``max_depth`` sets where evaluation scores depth (:mod:`polymax.data.protocol`). The focal length, when given,
is kept in ``self.focals``; PolyMaX does not use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from polymax.config.model import DatasetInfo
from polymax.data.images import check_same_size, png_header, read_image, read_png
from polymax.data.protocol import resolve_protocol
from polymax.data.sample import Sample
from polymax.errors import UserError


def parse_list(path: Path) -> list[tuple[str, str | None, float | None]]:
    """(rgb, depth or None, focal or None) per non-empty line of a list file."""
    if not path.is_file():
        raise UserError(f"list file not found: {path}; give data.options.lists={{SPLIT: FILE}} or put SPLIT.txt "
                        "in the data root")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (2, 3):
            raise UserError(f"{path}:{number}: expected 'rgb_path depth_path [focal]', got {line.strip()!r}")
        focal = None
        if len(fields) == 3:
            try:
                focal = float(fields[2])
            except ValueError:
                raise UserError(f"{path}:{number}: focal {fields[2]!r} is not a number") from None
        entries.append((fields[0], None if fields[1] == "None" else fields[1], focal))
    if not entries:
        raise UserError(f"{path}: the list is empty")
    return entries


class ListFileDataset(torch.utils.data.Dataset):
    """Image + metric depth samples from a list file (see the module docstring)."""

    def __init__(self, *, root: str | Path, split: str = "train", lists: dict[str, str] | None = None,
                 depth_root: str | Path | None = None, depth_scale: float = 0.001, protocol: str | None = None,
                 eval_crop: tuple[int, int, int, int] | None = None, min_depth: float | None = None,
                 max_depth: float | None = None) -> None:
        self.root = Path(root)
        self.depth_root = Path(depth_root) if depth_root is not None else self.root
        if float(depth_scale) <= 0:
            raise UserError(f"list-file data set: depth_scale must be positive (metres per PNG unit), "
                            f"got {depth_scale}")
        self.depth_scale = float(depth_scale)
        listed = (lists or {}).get(split)
        path = self.root / f"{split}.txt" if listed is None else self.root / listed
        entries = parse_list(path)
        self.images = [self.root / rgb.lstrip("/") for rgb, _, _ in entries]
        self.depths = [None if depth is None else self.depth_root / depth.lstrip("/") for _, depth, _ in entries]
        self.focals = [focal for _, _, focal in entries]
        self.protocol = resolve_protocol(protocol, eval_crop=eval_crop, min_depth=min_depth, max_depth=max_depth,
                                         where=str(path))
        self.info = DatasetInfo(name="list", class_names=(), ignore_label=255)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        image = read_image(self.images[index])
        size = tuple(image.shape[-2:])
        path = self.depths[index]
        depth = torch.zeros(size, dtype=torch.float32) if path is None else self._depth(path, size)
        return Sample(image=image, depth=depth, name=self.images[index].stem)

    def _depth(self, path: Path, size: tuple[int, int]) -> torch.Tensor:
        if path.suffix == ".npy":
            if not path.is_file():
                raise UserError(f"depth file not found: {path}")
            metres = np.load(path, allow_pickle=False)
            if metres.ndim != 2 or not np.issubdtype(metres.dtype, np.floating):
                raise UserError(f"{path}: depth .npy must be a 2-D float array in metres, got {metres.dtype} "
                                f"{metres.shape}")
        else:
            raw = read_png(path, bit_depth=16, channels=1, what="depth PNG (16-bit, see depth_scale)")
            if png_header(path)[3] != 0:
                raise UserError(f"{path}: depth PNG must be single-channel 16-bit grey")
            metres = raw.astype(np.float64) * self.depth_scale
        check_same_size(path, metres.shape, size, "depth")
        valid = np.isfinite(metres) & (metres > 0)
        return torch.from_numpy(np.where(valid, metres, 0.0).astype(np.float32))
