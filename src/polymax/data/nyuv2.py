"""NYUD-v2 from the official labelled release (depth_normals_conventions §3, §6.1–6.3).

Files under ``root``:
- ``nyu_depth_v2_labeled.mat`` — MATLAB v7.3 (HDF5). MATLAB stores column-major, so h5py sees every
  array with its axes reversed: ``images`` (N, 3, W, H) uint8, ``depths`` / ``rawDepths`` (N, W, H) float32
  metres, ``labels`` (N, W, H) uint16 in 0..894 (0 = unlabelled). Frame i is ``images[i].transpose(0, 2, 1)``.
- ``splits.mat`` — MATLAB v5 (scipy.io): ``trainNdxs`` (795) / ``testNdxs`` (654), 1-based frame indices.
- optional ``normals_dir``: 8-bit RGB PNGs (GeoNet / Bae format, n = v / 255 · 2 − 1, (0, 0, 0) invalid),
  named ``{i:06d}.png`` by 0-based frame index (``normals_naming="frame"``) or by 0-based position in the
  split (``"split"``, as the GeoNet test release numbers its 654 files).

Labels: semantic = Gupta et al. 894 → 40 mapping, then −1: classes 0..39, unlabelled → 255. Depth defaults
to ``rawDepths`` (projected Kinect, 0 = missing), the evaluation ground truth; ``depth="filled"`` gives the
colourisation-inpainted ``depths``. Geometry: 480×640; evaluation uses the crop rows 45:471, cols 41:601
with 1e-3 < depth < 10 m (:func:`eval_valid_mask`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from polymax.data.images import check_same_size, decode_normals_png, read_png, require_file
from polymax.data.label_spaces import load_metadata, nyuv2_info
from polymax.data.protocol import NYU
from polymax.data.sample import Sample
from polymax.errors import UserError

MAT_FILE = "nyu_depth_v2_labeled.mat"
SPLITS_FILE = "splits.mat"
IMAGE_SIZE = (480, 640)
EVAL_CROP = (45, 471, 41, 601)  # rows 45:471, cols 41:601 of the 480×640 ground truth (python slices)
TRAIN_BORDER_CROP = (45, 472, 43, 608)  # the depth recipe's training border crop (top, bottom, left, right)
MIN_EVAL_DEPTH, MAX_EVAL_DEPTH = 1e-3, 10.0
SPLITS = {"train": "trainNdxs", "test": "testNdxs"}


def label_lookup() -> np.ndarray:
    """uint8 table of 895 entries: raw label 0..894 → class 0..39, 0 → 255."""
    mapping = np.asarray(load_metadata("nyu40_class_mapping.json")["map_894_to_40"], dtype=np.int64)
    return np.concatenate([[255], mapping - 1]).astype(np.int64)


def eval_valid_mask(depth: torch.Tensor) -> torch.Tensor:
    """Pixels that count in NYUD-v2 depth evaluation: inside EVAL_CROP and 1e-3 < depth < 10 m.

    depth: (..., 480, 640) ground truth in metres → bool of the same shape.
    """
    if tuple(depth.shape[-2:]) != IMAGE_SIZE:
        raise UserError(f"NYUD-v2 evaluation needs 480x640 ground truth, got {depth.shape[-1]}x{depth.shape[-2]}")
    top, bottom, left, right = EVAL_CROP
    crop = torch.zeros(IMAGE_SIZE, dtype=torch.bool, device=depth.device)
    crop[top:bottom, left:right] = True
    return crop & (depth > MIN_EVAL_DEPTH) & (depth < MAX_EVAL_DEPTH)


def read_split(path: Path, split: str) -> np.ndarray:
    """0-based frame indices of a split from the official ``splits.mat`` (stored 1-based)."""
    from scipy.io import loadmat
    require_file(path, "NYUD-v2 split file")
    try:
        content = loadmat(str(path))
    except Exception as error:  # scipy raises several types for non-v5 / corrupt files
        raise UserError(f"{path}: cannot read as a MATLAB v5 .mat ({error})") from None
    key = SPLITS[split]
    if key not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise UserError(f"{path}: has no variable {key!r} (found {found})")
    values = np.asarray(content[key], dtype=np.float64).reshape(-1)
    if values.size == 0 or np.any(values != np.round(values)) or values.min() < 1:
        raise UserError(f"{path}: {key} must hold 1-based integer frame indices")
    return values.astype(np.int64) - 1


class NYUDepthV2(torch.utils.data.Dataset):
    """The labelled NYUD-v2 frames of one split as Samples (image, semantic, depth, optional normals)."""

    def __init__(self, *, root: str | Path, split: str = "train", depth: str = "raw",
                 normals_dir: str | Path | None = None, normals_naming: str = "frame",
                 mat_file: str = MAT_FILE, splits_file: str = SPLITS_FILE) -> None:
        if split not in (*SPLITS, "all"):
            raise UserError(f"NYUD-v2 split {split!r} does not exist; use train (795), test (654) or all (1449)")
        if depth not in ("raw", "filled"):
            raise UserError(f"NYUD-v2 depth must be 'raw' (evaluation ground truth) or 'filled', not {depth!r}")
        if normals_naming not in ("frame", "split"):
            raise UserError(f"normals_naming must be 'frame' or 'split', not {normals_naming!r}")
        self.root, self.split = Path(root), split
        self.mat_path = require_file(self.root / mat_file, "NYUD-v2 labelled .mat")
        self.depth_key = "rawDepths" if depth == "raw" else "depths"
        self.normals_dir = None if normals_dir is None else Path(normals_dir)
        if self.normals_dir is not None and not self.normals_dir.is_dir():
            raise UserError(f"NYUD-v2 normals folder not found: {self.normals_dir}")
        self.normals_naming = normals_naming
        self.info = nyuv2_info()
        self.protocol = NYU   # Eigen's crop, 1e-3..10 m, the recipe's border crop
        self._lookup = label_lookup()
        self._file, self._pid = None, None
        count, self.size = self._check_layout()
        if split == "all":
            self.frames = np.arange(count)
        else:
            self.frames = read_split(self.root / splits_file, split)
            if self.frames.max() >= count:
                raise UserError(f"{self.root / splits_file}: index {self.frames.max() + 1} exceeds the "
                                f"{count} frames in {self.mat_path}")

    def _open(self):
        # h5py handles must not cross fork(): each data-loader worker opens its own.
        if self._file is None or self._pid != os.getpid():
            import h5py
            try:
                self._file = h5py.File(self.mat_path, "r")
            except OSError as error:
                raise UserError(f"{self.mat_path}: not a MATLAB v7.3 (HDF5) file ({error})") from None
            self._pid = os.getpid()
        return self._file

    def _check_layout(self) -> tuple[int, tuple[int, int]]:
        handle = self._open()
        missing = [k for k in ("images", "labels", self.depth_key) if k not in handle]
        if missing:
            raise UserError(f"{self.mat_path}: missing variable(s) {missing}; is this nyu_depth_v2_labeled.mat?")
        images = handle["images"].shape
        if len(images) != 4 or images[1] != 3:
            raise UserError(f"{self.mat_path}: 'images' has h5py shape {images}, expected (N, 3, W, H)")
        count, width, height = images[0], images[2], images[3]
        for key in ("labels", self.depth_key):
            if handle[key].shape != (count, width, height):
                raise UserError(f"{self.mat_path}: {key!r} has h5py shape {handle[key].shape}, expected "
                                f"{(count, width, height)} to match 'images'")
        handle.close()
        self._file = None  # reopened lazily by the process that reads (data-loader workers)
        return count, (height, width)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.frames)

    def frame_name(self, index: int) -> str:
        return f"nyuv2_{int(self.frames[index]):04d}"

    def __getitem__(self, index: int) -> Sample:
        frame = int(self.frames[index])
        handle = self._open()
        image = np.asarray(handle["images"][frame]).transpose(0, 2, 1)       # (3, H, W)
        raw_labels = np.asarray(handle["labels"][frame]).T.astype(np.int64)  # (H, W)
        depth = np.asarray(handle[self.depth_key][frame], dtype=np.float32).T
        if raw_labels.max() >= len(self._lookup) or raw_labels.min() < 0:
            raise UserError(f"{self.mat_path}: frame {frame + 1} has label {raw_labels.max()} outside 0..894")
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
        normals = self._read_normals(index, frame) if self.normals_dir is not None else None
        return Sample(image=torch.from_numpy(np.ascontiguousarray(image)),
                      semantic=torch.from_numpy(self._lookup[raw_labels]),
                      depth=torch.from_numpy(np.ascontiguousarray(depth)), normals=normals,
                      name=self.frame_name(index))

    def _read_normals(self, index: int, frame: int) -> torch.Tensor:
        number = frame if self.normals_naming == "frame" else index
        path = self.normals_dir / f"{number:06d}.png"
        rgb = read_png(path, bit_depth=8, channels=3, what="NYUD-v2 normals PNG")
        check_same_size(path, rgb.shape[:2], self.size, "normals PNG")
        return decode_normals_png(rgb)
