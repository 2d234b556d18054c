"""Safe image and label-file readers: every failure is a :class:`UserError` that names the file.

Data sets fail loudly rather than mislabel: a missing file, a truncated JPEG, a depth PNG that is 8-bit when
16-bit is required, or a label whose size differs from its image all stop with one line saying which file
and what to do. PNG bit depth is read from the file's IHDR chunk, not guessed from the decoded mode.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from polymax.errors import UserError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types (IHDR byte 9) → number of channels.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


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


def _open_fully(path: Path) -> Image.Image:
    """Open and decode the whole file now, so a truncated file fails here with its name."""
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UserError(f"{path}: corrupt or truncated image ({error}); re-download or re-export it") from None
    return image


def read_image(path: str | Path) -> torch.Tensor:
    """An RGB image as uint8 (3, H, W). Grey or palette images are converted to RGB; alpha is dropped."""
    path = require_file(path, "image")
    image = _open_fully(path)
    if image.mode not in ("RGB", "L", "P", "RGBA", "LA", "CMYK", "YCbCr", "I;16", "I"):
        raise UserError(f"{path}: unsupported image mode {image.mode!r}; save it as 8-bit RGB")
    if image.mode in ("I;16", "I"):
        raise UserError(f"{path}: is a 16-bit single-channel image, not an RGB photo")
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


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
