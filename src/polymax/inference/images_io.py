"""Inputs for inference: which files a user meant, and their pixels as RGB.

Conversion rule (the same for files, PIL images and numpy arrays):

* 8-bit RGB is used as is;
* grayscale (``L``, or a 2-D / (H, W, 1) array) is repeated into the three channels;
* RGBA / LA: the alpha channel is **dropped** (the colour values are kept, transparent pixels included), as
  the training data loaders do; palette, CMYK and YCbCr images are converted to RGB by Pillow;
* 16-bit, 32-bit integer and float *files* are refused (they are not photos). numpy arrays may be uint8 or
  float; float arrays are taken to hold 0..255 values (like the model's input), not 0..1.

Files are read with :func:`polymax.data.images.read_image`, which turns them upright by their EXIF orientation,
checks their declared size against a pixel limit before decoding, and decodes the whole file at once so a
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


def collect_inputs(inputs: list[str], *, out_dir: str | os.PathLike | None = None) -> InputList:
    """Expand files, folders (searched recursively for image suffixes) and glob patterns, in a stable order.

    Output names are the file stem; files found in a folder keep their sub-folder (``FOLDER/a/b.jpg`` →
    ``a/b``). A name already taken gets ``-2``, ``-3``, … appended, so no output overwrites another.
    ``out_dir``: the output folder. It must not be an input folder (a UserError: outputs would be mixed
    with the images); inside an input folder it is left out of the search, and a pattern's matches inside it
    are skipped (with the reason), so a run never reads what an earlier run wrote. A file named explicitly is
    read wherever it is (outputs always add a suffix to the name, so they never overwrite an input).
    Paths with an image suffix that are no readable file (a symlink loop, a broken link, a folder named
    like an image) are reported among the problems, never dropped silently.
    """
    found = InputList()
    taken: set[str] = set()
    seen: set[Path] = set()
    out = Path(out_dir).resolve() if out_dir is not None else None

    def inside_out(path: Path) -> bool:
        return out is not None and path.resolve().is_relative_to(out)

    def add(path: Path, name: str, *, explicit: bool = False) -> None:
        resolved = path.resolve()
        if resolved in seen:
            return
        if not explicit and inside_out(path):
            found.problems.append(f"{path}: inside the --out folder {out_dir} (an earlier output?); not read")
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
            if out is not None and path.resolve() == out:
                raise UserError(f"--out {out_dir} is the input folder {path}; choose a separate folder (outputs "
                                "would be mixed with the images and read as inputs by the next run)")
            candidates = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                                and not (out is not None and p.parent.resolve().is_relative_to(out)))
            files = [p for p in candidates if p.is_file()]
            for other in candidates:
                if not other.is_file():
                    found.problems.append(f"{other}: {_not_a_file(other)}")
            if not candidates:
                found.problems.append(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            for file in files:
                add(file, file.relative_to(path).with_suffix("").as_posix())
        elif path.is_file():
            add(path, path.stem, explicit=True)
        elif path.is_symlink():
            found.problems.append(f"{path}: {_not_a_file(path)}")
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                found.problems.append(f"{text}: pattern matches no files")
            for file in files:
                add(file, file.stem)
        else:
            found.problems.append(f"{path}: no such file or folder")
    if out is not None:
        _refuse_overwriting_an_input(found.images, out, out_dir)
    return found


def _refuse_overwriting_an_input(images: list[InputImage], out: Path, out_dir: str | os.PathLike) -> None:
    """Every output is ``OUT/<name>_<suffix>``: an input file at such a path would be overwritten before (or
    after) it is read, so the run is refused before anything is written."""
    for image in images:
        resolved = image.path.resolve()
        if not resolved.is_relative_to(out):
            continue
        relative = resolved.relative_to(out).as_posix()
        clash = next((other.name for other in images if relative.startswith(other.name + "_")), None)
        if clash is not None:
            raise UserError(f"{image.path} is inside --out {out_dir} and would be overwritten by the outputs of "
                            f"{clash!r}; choose another --out")


def _not_a_file(path: Path) -> str:
    """Why a path named like an image is not one we can read."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:          # Python 3.11 raises this for a loop
            return "a symlink loop; not read"
        except OSError as error:
            if "loop" in str(error).lower():
                return "a symlink loop; not read"
            return "a broken symlink (its target does not exist); not read"
    if path.is_dir():
        return "a folder named like an image; not read"
    return "not a regular file; not read"



def load_rgb(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 upright RGB of an image file; a UserError naming the file if it is missing, unreadable
    or over ``max_pixels`` (checked before decoding)."""
    from polymax.data.images import read_image

    return read_image(path, max_pixels=max_pixels).permute(1, 2, 0).numpy()


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB 0..255 from a PIL image or a numpy array (the conversion rule above): uint8 for PIL images
    and uint8 arrays (no float copy of a large photo is made here), float32 for float arrays."""
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise UserError(f"image mode {image.mode!r} is not an 8-bit photo; convert it to RGB first")
        from polymax.data.images import upright
        return np.asarray(upright(image).convert("RGB"), dtype=np.uint8)
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
    if array.dtype != np.uint8:
        if not np.isfinite(array).all():
            raise UserError("image contains NaN or infinite values; pass RGB values in 0..255")
        # the model's own rule, also for ONNX graphs (which carry no check)
        from polymax.model.meta_arch import check_value_range
        check_value_range(float(array.min()), float(array.max()))
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])
