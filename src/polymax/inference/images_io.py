"""Inputs for inference: which files a user meant, and their pixels as RGB.

Conversion rule (the same for files, PIL images and numpy arrays):

* 8-bit RGB is used as is;
* grayscale (``L``, or a 2-D / (H, W, 1) array) is repeated into the three channels;
* RGBA / LA: the alpha channel is **dropped** (the colour values are kept, transparent pixels included), as
  the training data loaders do; palette, CMYK and YCbCr images are converted to RGB by Pillow;
* 16-bit, 32-bit integer and float *files* are refused (they are not photos). numpy arrays may be uint8 or
  float; float arrays are taken to hold 0..255 values (like the model's input), not 0..1.

Files are read with :func:`polymax.data.images.read_image`, which decodes the whole file at once so a
truncated or corrupt file fails with its name.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from polymax.errors import UserError

# Suffixes looked for inside folders (explicitly named files are tried whatever their suffix).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputImage:
    """One image file to predict: its path and the output name (relative, without suffix) to write under."""

    path: Path
    name: str


@dataclass
class InputList:
    """The images found for the command-line inputs, and the inputs that named nothing (with the reason)."""

    images: list[InputImage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def collect_inputs(inputs: list[str]) -> InputList:
    """Expand files, folders (searched recursively for image suffixes) and glob patterns, in a stable order.

    Output names are the file stem; files found in a folder keep their sub-folder (``FOLDER/a/b.jpg`` →
    ``a/b``). A name already taken gets ``-2``, ``-3``, … appended, so no output overwrites another.
    """
    found = InputList()
    taken: set[str] = set()
    seen: set[Path] = set()

    def add(path: Path, name: str) -> None:
        resolved = path.resolve()
        if resolved in seen:
            return
        seen.add(resolved)
        unique, counter = name, 2
        while unique in taken:
            unique, counter = f"{name}-{counter}", counter + 1
        taken.add(unique)
        found.images.append(InputImage(path=path, name=unique))

    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                found.problems.append(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            for file in files:
                add(file, file.relative_to(path).with_suffix("").as_posix())
        elif path.is_file():
            add(path, path.stem)
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                found.problems.append(f"{text}: pattern matches no files")
            for file in files:
                add(file, file.stem)
        else:
            found.problems.append(f"{path}: no such file or folder")
    return found


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file; a UserError naming the file if it is missing or unreadable."""
    from polymax.data.images import read_image

    return read_image(path).permute(1, 2, 0).numpy()


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB 0..255 from a PIL image or a numpy array (the conversion rule above): uint8 for PIL images
    and uint8 arrays (no float copy of a large photo is made here), float32 for float arrays."""
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise UserError(f"image mode {image.mode!r} is not an 8-bit photo; convert it to RGB first")
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if not isinstance(image, np.ndarray):
        raise UserError(f"predict takes a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype == np.uint8:
        array = image
    elif np.issubdtype(image.dtype, np.floating):
        array = image.astype(np.float32)
    else:
        raise UserError(f"image arrays must be uint8 (0..255) or float (0..255), got dtype {image.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        hint = "; move channels last with array.transpose(1, 2, 0)" if array.ndim == 3 and array.shape[0] in (
            1, 3, 4) else ""
        raise UserError(f"image arrays must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}{hint}")
    if min(array.shape[:2]) < 1:
        raise UserError(f"image is empty: shape {image.shape}")
    if array.dtype != np.uint8 and not np.isfinite(array).all():
        raise UserError("image contains NaN or infinite values; pass RGB values in 0..255")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])
