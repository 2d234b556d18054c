"""Instance masks as fixed-size crops (AiT's instance tokens): the tight box of an instance, its mask cut out of
the box and resized to S × S, and the way back (a crop pasted into its box on an image-size canvas).

Boxes are (r0, c0, r1, c1) inclusive pixel rows / columns on an (H, W) map; normalised boxes are
(x0, y0, x1, y1) = (c0 / W, r0 / H, (c1 + 1) / W, (r1 + 1) / H), pixel edges in [0, 1]. Both resizes use the
align-corners grid of ``polymax.geometry`` (crop: nearest neighbours, so a crop stays binary; paste: bilinear on
the soft mask), so that a box of at most (S + 1) / 2 pixels a side comes back exactly (tests/tokenizer).

Used by ``polymax train-tokenizer`` (the training crops), the instance_tokens criterion (the target crops and
boxes) and its decoder (the paste).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from polymax.geometry import resize_bilinear, resize_nearest

Box = tuple[int, int, int, int]


def tight_box(mask: Tensor) -> Box | None:
    """(H, W) bool → (r0, c0, r1, c1) of its set pixels, None when it has none."""
    rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
    if rows.numel() == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def crop_mask(mask: Tensor, box: Box, size: int) -> Tensor:
    """(H, W) bool → (size, size) float32 0 / 1: the box cut out and resized by nearest neighbours."""
    r0, c0, r1, c1 = box
    return resize_nearest(mask[r0: r1 + 1, c0: c1 + 1], (size, size)).float()


def normalise_box(box: Box, size: tuple[int, int]) -> Tensor:
    """(r0, c0, r1, c1) on an (H, W) map → (4,) float32 (x0, y0, x1, y1) pixel edges in [0, 1]."""
    r0, c0, r1, c1 = box
    height, width = size
    return torch.tensor([c0 / width, r0 / height, (c1 + 1) / width, (r1 + 1) / height], dtype=torch.float32)


def box_pixels(box: Tensor, size: tuple[int, int]) -> Box:
    """(4,) normalised (x0, y0, x1, y1) → the inclusive pixel box on an (H, W) map, clipped to it, at least one
    pixel (the inverse of ``normalise_box``)."""
    height, width = size
    x0, y0, x1, y1 = (float(v) for v in box)
    c0 = min(max(round(x0 * width), 0), width - 1)
    r0 = min(max(round(y0 * height), 0), height - 1)
    c1 = min(max(round(x1 * width) - 1, c0), width - 1)
    r1 = min(max(round(y1 * height) - 1, r0), height - 1)
    return r0, c0, r1, c1


def paste_mask(crop: Tensor, box: Box, size: tuple[int, int]) -> Tensor:
    """(S, S) soft mask → (H, W) float32: resized bilinearly (align corners) onto the box, 0 outside it."""
    r0, c0, r1, c1 = box
    canvas = torch.zeros(size, dtype=torch.float32, device=crop.device)
    resized = resize_bilinear(crop.float()[None, None], (r1 - r0 + 1, c1 - c0 + 1))[0, 0]
    canvas[r0: r1 + 1, c0: c1 + 1] = resized
    return canvas


def instance_crops(panoptic: Tensor, *, thing_classes: Sequence[int], ignore_label: int, label_divisor: int,
                   size: int, crowd: Tensor | None = None) -> list[Tensor]:
    """The (size, size) crops of every thing instance of one (H, W) panoptic map (instance id 0 and crowd
    pixels skipped), in id order: the training data of a mask tokenizer."""
    crops = []
    for segment in panoptic.unique().tolist():
        category = segment // label_divisor
        if category == ignore_label or category not in thing_classes or segment % label_divisor == 0:
            continue
        mask = panoptic == segment
        if crowd is not None:
            mask &= ~crowd.bool()
        box = tight_box(mask)
        if box is not None:
            crops.append(crop_mask(mask, box, size))
    return crops
