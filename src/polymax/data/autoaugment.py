"""The "simple" AutoAugment policy of deeplab2 (kMaX spec §5), photometric only, on float images in 0..255.

Five sub-policies of two (op, probability, level) steps; one sub-policy is drawn uniformly per image and
each of its steps fires with its probability. Levels run 0..10 (TF AutoAugment's ``_MAX_LEVEL``):
- Sharpness / Brightness / Color / Contrast: blend factor = level / 10 · 1.8 + 0.1 (no random sign),
  result = degenerate + factor · (image − degenerate), clipped to 0..255 and truncated to integers.
  Degenerate images: 3×3 smoothing kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 with the 1-pixel border kept
  (Sharpness), black (Brightness), grey-scale with weights 0.2989 / 0.5870 / 0.1140 (Color), the mean
  grey level (Contrast — TF's code divides the histogram's pixel count by 256 instead, a known bug
  that we do not reproduce).
- Solarize: threshold = int(level / 10 · 256); pixels ≥ threshold become 255 − value.
- Equalize: per-channel histogram equalisation (PIL / TF lookup-table definition); level unused.
``magnitude_scale`` multiplies every level (Cityscapes uses 0.2). The ops touch only the image, so labels
stay aligned by construction.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MAX_LEVEL = 10.0

SIMPLE_POLICY: tuple[tuple[tuple[str, float, float], tuple[str, float, float]], ...] = (
    (("Sharpness", 0.4, 7), ("Brightness", 0.2, 10)),
    (("Equalize", 0.0, 9), ("Contrast", 0.2, 10)),
    (("Sharpness", 0.2, 9), ("Color", 0.2, 9)),
    (("Solarize", 0.2, 7), ("Equalize", 0.6, 9)),
    (("Sharpness", 0.2, 1), ("Equalize", 0.2, 7)),
)


def enhance_factor(level: float) -> float:
    return level / MAX_LEVEL * 1.8 + 0.1


def _quantise(image: torch.Tensor) -> torch.Tensor:
    """TF casts float → uint8 by truncation after clipping."""
    return image.clamp(0, 255).floor()


def blend(degenerate: torch.Tensor, image: torch.Tensor, factor: float) -> torch.Tensor:
    return _quantise(degenerate + factor * (image - degenerate))


def grayscale(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) → (1, H, W) luma, rounded like TF's uint8 conversion."""
    weights = torch.tensor([0.2989, 0.5870, 0.1140], dtype=image.dtype).view(3, 1, 1)
    return (image * weights).sum(0, keepdim=True).round().clamp(0, 255)


def sharpness(image: torch.Tensor, factor: float) -> torch.Tensor:
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    smooth = F.conv2d(image[:, None], kernel.view(1, 1, 3, 3).to(image.dtype))[:, 0]  # (3, H-2, W-2)
    degenerate = image.clone()
    degenerate[:, 1:-1, 1:-1] = _quantise(smooth)
    return blend(degenerate, image, factor)


def brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    return blend(torch.zeros_like(image), image, factor)


def color(image: torch.Tensor, factor: float) -> torch.Tensor:
    return blend(grayscale(image).expand_as(image), image, factor)


def contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    mean = grayscale(image).mean()
    return blend(torch.full_like(image, float(mean)), image, factor)


def solarize(image: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.where(image < threshold, image, 255.0 - image)


def equalize(image: torch.Tensor) -> torch.Tensor:
    """Per channel: lut = (cumsum(hist) + step // 2) // step shifted by one bin, step = (n − n_last) // 255."""
    out = torch.empty_like(image)
    for channel in range(image.shape[0]):
        values = image[channel].round().clamp(0, 255).long()
        histogram = torch.bincount(values.flatten(), minlength=256)
        nonzero = histogram[histogram > 0]
        step = int((nonzero.sum() - nonzero[-1]) // 255)
        if step == 0:
            out[channel] = values.to(image.dtype)
            continue
        lut = (torch.cumsum(histogram, 0) + step // 2) // step
        lut = torch.cat([torch.zeros(1, dtype=lut.dtype), lut[:-1]]).clamp(0, 255)
        out[channel] = lut[values].to(image.dtype)
    return out


def apply_op(name: str, image: torch.Tensor, level: float) -> torch.Tensor:
    """One AutoAugment op at a level in 0..10; image float (3, H, W) already quantised to integers."""
    if name == "Sharpness":
        return sharpness(image, enhance_factor(level))
    if name == "Brightness":
        return brightness(image, enhance_factor(level))
    if name == "Color":
        return color(image, enhance_factor(level))
    if name == "Contrast":
        return contrast(image, enhance_factor(level))
    if name == "Solarize":
        return solarize(image, int(level / MAX_LEVEL * 256))
    if name == "Equalize":
        return equalize(image)
    raise ValueError(f"unknown AutoAugment op {name!r}")


def apply_simple_policy(image: torch.Tensor, generator: np.random.Generator, *,
                        magnitude_scale: float = 1.0) -> torch.Tensor:
    """Draw one sub-policy and apply it. image: (3, H, W) in 0..255 (uint8 or float) → float32, integer-valued."""
    image = _quantise(image.to(torch.float32).round())
    sub_policy = SIMPLE_POLICY[int(generator.integers(len(SIMPLE_POLICY)))]
    for name, probability, level in sub_policy:
        if generator.random() < probability:
            image = apply_op(name, image, level * magnitude_scale)
    return image
