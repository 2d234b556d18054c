"""Safe image and label-file readers: every failure is a :class:`UserError` that names the file.

Data sets fail loudly rather than mislabel: a missing file, a truncated JPEG, a depth PNG that is 8-bit when
16-bit is required, or a label whose size differs from its image all stop with one line saying which file
and what to do. PNG bit depth is read from the file's IHDR chunk, not guessed from the decoded mode.

Photos (:func:`read_image`) are turned upright by their EXIF orientation tag, as a phone shows them; label files
(:func:`read_png` and the readers built on it) are read as stored, without rotation: labels carry no EXIF, and
must match the upright photo. Every file's declared size is checked against a pixel limit *before* it is
decoded (``max_pixels``; default :data:`MAX_PIXELS`, or ``$POLYMAX_MAX_PIXELS``), so a decompression bomb costs
a header read, not gigabytes of memory.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from polymax.errors import UserError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types (IHDR byte 9) → number of channels.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# 50 megapixels: a 12k × 4k panorama fits; decoding one takes about 150 MB as 8-bit RGB.
MAX_PIXELS = 50_000_000


class ImageTooLarge(UserError):
    """An image whose declared size is over the pixel limit (a server answers 413, not 400)."""


def default_max_pixels() -> int:
    """The pixel limit when a caller gives none: ``$POLYMAX_MAX_PIXELS`` (for data loading) or MAX_PIXELS."""
    text = os.environ.get("POLYMAX_MAX_PIXELS", "")
    try:
        return int(text) if text else MAX_PIXELS
    except ValueError:
        raise UserError(f"POLYMAX_MAX_PIXELS must be a whole number of pixels, got {text!r}") from None


def too_large_message(name: object, width: int, height: int, max_pixels: int) -> str:
    """The one line that names an oversized image and the limit."""
    return (f"{name}: {width}×{height} = {width * height} pixels is over the limit of {max_pixels} pixels "
            "(--max-pixels or $POLYMAX_MAX_PIXELS raises it)")


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise a UserError saying that this ``what`` is missing."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    return path


def png_header(path: str | Path) -> tuple[int, int, int, int]:
    """(width, height, bit_depth, colour_type) read from a PNG's IHDR chunk."""
    path = require_file(path, "PNG file")
    with open(path, "rb") as handle:
        head = handle.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise UserError(f"{path}: not a PNG file (bad signature or header); re-export it as PNG")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", head[16:26])
    return width, height, bit_depth, colour_type


def open_checked(source, name: object, max_pixels: int | None = None) -> Image.Image:
    """Open ``source`` (a path or a binary file object), check its declared size, then decode it fully (so a
    truncated file fails here with its name). Every failure is a one-line UserError naming ``name``."""
    limit = default_max_pixels() if max_pixels is None else max_pixels
    # Pillow refuses images over 2 × MAX_IMAGE_PIXELS inside open(); keep its guard above ours so that ours,
    # which names the file and the option, speaks first (its warning below that is ours to give, not Pillow's).
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
            if image.width * image.height > limit:
                raise ImageTooLarge(too_large_message(name, image.width, image.height, limit))
            image.load()
    except UserError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{name}: the image is over the limit of {limit} pixels "
                        "(--max-pixels or $POLYMAX_MAX_PIXELS raises it)") from None
    except FileNotFoundError:
        raise UserError(f"image not found: {name}") from None
    except PermissionError:
        raise UserError(f"{name}: cannot be read (permission denied)") from None
    except IsADirectoryError:
        raise UserError(f"{name}: is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise UserError(f"{name}: not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UserError(f"{name}: corrupt or truncated image ({error}); re-download or re-export it") from None
    return image


def _open_fully(path: Path, max_pixels: int | None = None) -> Image.Image:
    """Open and decode the whole file now, so a truncated file fails here with its name."""
    return open_checked(path, path, max_pixels)


def read_image(path: str | Path, *, max_pixels: int | None = None) -> torch.Tensor:
    """An upright RGB image as uint8 (3, H, W): EXIF orientation applied; grey, 1-bit or palette images are
    converted to RGB; alpha is dropped. Images over ``max_pixels`` are refused before decoding."""
    path = require_file(path, "image")
    image = upright(_open_fully(path, max_pixels))
    if image.mode not in ("RGB", "L", "1", "P", "RGBA", "LA", "CMYK", "YCbCr", "I;16", "I"):
        raise UserError(f"{path}: unsupported image mode {image.mode!r}; save it as 8-bit RGB")
    if image.mode in ("I;16", "I"):
        raise UserError(f"{path}: is a 16-bit single-channel image, not an RGB photo")
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def upright(image: Image.Image) -> Image.Image:
    """The image as a camera's EXIF orientation tag says to display it (unchanged when it has none)."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError):   # a malformed EXIF block: keep the stored pixels
        return image


def read_png(path: str | Path, *, bit_depth: int, channels: int, what: str = "label PNG") -> np.ndarray:
    """A PNG with exactly this bit depth and channel count: (H, W) or (H, W, C), uint8 or uint16.

    Palette PNGs count as 8-bit single-channel (their indices are the values, as in Cityscapes / VOC).
    """
    path = require_file(path, what)
    _, _, file_depth, colour_type = png_header(path)
    file_channels = _PNG_CHANNELS.get(colour_type)
    if file_channels is None:
        raise UserError(f"{path}: PNG has an invalid colour type {colour_type}")
    if file_depth != bit_depth:
        raise UserError(f"{path}: {what} must be a {bit_depth}-bit PNG but is {file_depth}-bit")
    if file_channels != channels:
        raise UserError(f"{path}: {what} must have {channels} channel(s) but has {file_channels}")
    image = _open_fully(path)
    if colour_type == 3:
        array = np.asarray(image)  # palette indices, not colours
    elif bit_depth == 16 and channels == 1:
        array = np.asarray(image).astype(np.uint16)
    else:
        array = np.asarray(image)
    if channels > 1 and array.ndim != 3:
        raise UserError(f"{path}: could not decode {channels} channels from {what}")
    return array


def read_id_png(path: str | Path, what: str = "label PNG") -> np.ndarray:
    """A single-channel class-id PNG, 8-bit or 16-bit, as int64 (H, W)."""
    path = require_file(path, what)
    _, _, depth, colour_type = png_header(path)
    if _PNG_CHANNELS.get(colour_type) != 1 or depth not in (8, 16):
        raise UserError(f"{path}: {what} must be a single-channel 8- or 16-bit PNG of class ids "
                        f"(found colour type {colour_type}, {depth}-bit)")
    return read_png(path, bit_depth=depth, channels=1, what=what).astype(np.int64)


def read_rgb_segment_ids(path: str | Path, what: str = "panoptic PNG") -> np.ndarray:
    """COCO-style panoptic PNG → int64 (H, W) segment ids, id = R + 256·G + 256²·B."""
    rgb = read_png(path, bit_depth=8, channels=3, what=what).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def check_same_size(path: str | Path, label_hw: tuple[int, ...], image_hw: tuple[int, ...], what: str) -> None:
    """Raise if a label's (H, W) differs from its image's (the label would be misaligned)."""
    if tuple(label_hw) != tuple(image_hw):
        raise UserError(f"{path}: {what} is {label_hw[1]}x{label_hw[0]} (WxH) but its image is "
                        f"{image_hw[1]}x{image_hw[0]}; labels must have the image's size")


def decode_normals_png(rgb: np.ndarray) -> torch.Tensor:
    """8-bit RGB normals → float32 (3, H, W) in [-1, 1], n = v / 255 · 2 − 1; (0, 0, 0) pixels → all-zero.

    Near-zero decoded vectors (e.g. Taskonomy's mid-grey "no geometry" value 128 → 0.004) are also
    invalid; valid vectors are re-normalised to unit length (8-bit quantisation leaves |n| ≈ 1 ± 0.01).
    """
    values = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)
    normals = values / 255.0 * 2.0 - 1.0
    length = normals.norm(dim=0, keepdim=True)
    valid = (values.sum(dim=0, keepdim=True) > 0) & (length > 0.5)
    return torch.where(valid, normals / length.clamp_min(1e-6), torch.zeros_like(normals))
