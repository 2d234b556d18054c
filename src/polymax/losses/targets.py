"""Ground-truth preprocessing for the mask losses (deeplab2 ``MaXDeepLabLoss._pre_process_ground_truth``).

The input-resolution labels of :class:`polymax.structures.Targets` become, at the prediction's resolution
(h, w), a list of G ground-truth masks and a per-pixel mask index:

- G = ``max_thing_id`` thing slots (thing instances numbered in order of first appearance in a raster scan of
  the full-resolution panoptic label; crowd regions excluded) followed by one slot per stuff class, stuff
  classes in ascending class order.
- Masks whose area is zero at (h, w) are void (class −1), as are unused thing slots.
- The labels are downsampled by strided slicing ``[::s]`` with s = (H − 1) / (h − 1) (32k+1 sizes), not
  resized, so that every kept pixel carries an exact label.

With ``thing_classes=()`` and ``max_thing_id=0`` every class is a "stuff" slot and slot c is class c: the
layout of PolyMaX's semantic head, whose query i is class i.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from polymax.structures import Targets


@dataclass
class MaskTargets:
    """Ground-truth masks at the prediction resolution; P = h·w pixels (row-major), G masks.

    pixel_mask_id: (B, P) int64, the GT mask of each pixel; −1 where there is none (void, crowd, or a thing
        instance beyond ``max_thing_id``).
    non_void: (B, P) bool, semantic label ≠ ignore. Crowd pixels are non-void (they keep their class).
    mask_class: (B, G) int64, the class of each GT mask; −1 for void masks (unused or zero-area slots).
    mask_area: (B, G) float32 pixel count of each mask at (h, w).
    inverse_mask_area: (B, P) float32, h·w / max(area of the pixel's mask, 1) (h·w where there is no mask).
    size: (h, w).
    """

    pixel_mask_id: Tensor
    non_void: Tensor
    mask_class: Tensor
    mask_area: Tensor
    inverse_mask_area: Tensor
    size: tuple[int, int]

    @property
    def mask_valid(self) -> Tensor:
        """(B, G) bool, True for the GT masks that exist."""
        return self.mask_class >= 0

    @property
    def num_masks(self) -> int:
        return self.mask_class.shape[1]


def strided_downsample(label: Tensor, size: tuple[int, int]) -> Tensor:
    """Take every s-th row and column of ``label`` (…, H, W) so that it becomes (…, h, w).

    s = (H − 1) / (h − 1) must be an integer in both directions (deeplab2 ``strided_downsample``); a 1-pixel
    target keeps the first row / column.
    """
    height, width = label.shape[-2:]
    target_h, target_w = size
    if (height, width) == (target_h, target_w):
        return label
    rates = []
    for full, target in ((height, target_h), (width, target_w)):
        if target == 1:
            rates.append(full)
            continue
        if target < 1 or target > full or (full - 1) % (target - 1):
            raise ValueError(f"cannot downsample a {height}x{width} label to {target_h}x{target_w} by striding: "
                             "(H - 1) / (h - 1) must be an integer (use 32k+1 sizes)")
        rates.append((full - 1) // (target - 1))
    return label[..., :: rates[0], :: rates[1]]


def thing_instance_ids(panoptic: Tensor, crowd: Tensor | None, *, thing_classes: Sequence[int], ignore_label: int,
                       label_divisor: int, max_thing_id: int) -> tuple[Tensor, Tensor]:
    """Number the thing instances of one panoptic label in order of first appearance in a raster scan.

    panoptic: (H, W) int64 class · label_divisor + instance. crowd: (H, W) bool or None.
    A pixel belongs to a thing instance when its class is a thing class (not ignore), its instance id is not 0
    (instance 0 of a thing class is deeplab2's crowd encoding) and it is not crowd. Instances beyond
    ``max_thing_id`` get no id (deeplab2 asserts instead; dropping them keeps training alive).
    Returns thing_id: (H, W) int64 in 0..max_thing_id−1, −1 elsewhere; thing_class: (max_thing_id,) int64,
    −1 for unused ids.
    """
    flat = panoptic.reshape(-1)
    classes = torch.div(flat, label_divisor, rounding_mode="floor")
    is_thing = torch.isin(classes, torch.as_tensor(list(thing_classes), dtype=flat.dtype, device=flat.device))
    candidate = is_thing & (classes != ignore_label) & (flat % label_divisor != 0)
    if crowd is not None:
        candidate &= ~crowd.reshape(-1).bool()

    thing_id = torch.full_like(flat, -1)
    thing_class = torch.full((max_thing_id,), -1, dtype=torch.int64, device=flat.device)
    positions = candidate.nonzero().squeeze(1)
    if positions.numel() == 0 or max_thing_id == 0:
        return thing_id.reshape(panoptic.shape), thing_class
    unique_ids, inverse = torch.unique(flat[positions], return_inverse=True)
    # First raster position of every unique id, then its rank among the ids: the thing id.
    first = torch.full_like(unique_ids, flat.numel()).scatter_reduce(0, inverse, positions, reduce="amin")
    rank = torch.empty_like(first)
    rank[first.argsort()] = torch.arange(len(first), device=flat.device)
    pixel_rank = rank[inverse]
    thing_id[positions] = torch.where(pixel_rank < max_thing_id, pixel_rank, -1)
    kept = rank < max_thing_id
    thing_class[rank[kept]] = torch.div(unique_ids[kept], label_divisor, rounding_mode="floor")
    return thing_id.reshape(panoptic.shape), thing_class


def prepare_mask_targets(targets: Targets, *, output_size: tuple[int, int], num_classes: int,
                         thing_classes: Sequence[int], ignore_label: int, label_divisor: int,
                         max_thing_id: int) -> MaskTargets:
    """Build the G = max_thing_id + #stuff GT masks of a batch at ``output_size`` (see the module docstring).

    Needs ``targets.semantic`` (B, H, W); ``targets.panoptic`` too when there are thing slots.
    """
    if targets.semantic is None:
        raise ValueError("the mask losses need semantic labels (Targets.semantic)")
    semantic = targets.semantic.long()
    device = semantic.device
    thing_set = set(thing_classes) if max_thing_id > 0 else set()
    stuff_classes = [c for c in range(num_classes) if c not in thing_set]
    num_masks = max_thing_id + len(stuff_classes)

    # Class → stuff slot (−1 for thing classes); classes outside 0..C−1 (ignore) get no slot.
    stuff_slot = torch.full((num_classes,), -1, dtype=torch.int64, device=device)
    stuff_slot[torch.as_tensor(stuff_classes, dtype=torch.int64, device=device)] = torch.arange(
        max_thing_id, num_masks, device=device)

    small_semantic = strided_downsample(semantic, output_size).reshape(semantic.shape[0], -1)  # (B, P)
    in_range = (small_semantic >= 0) & (small_semantic < num_classes)
    pixel_mask_id = torch.where(in_range, stuff_slot[small_semantic.clamp(0, num_classes - 1)], -1)

    batch = semantic.shape[0]
    thing_class = torch.full((batch, max_thing_id), -1, dtype=torch.int64, device=device)
    if thing_set:
        if targets.panoptic is None:
            raise ValueError("thing masks need panoptic labels (Targets.panoptic)")
        for b in range(batch):  # the raster-scan numbering is per image, at full resolution
            crowd = None if targets.crowd is None else targets.crowd[b]
            ids, thing_class[b] = thing_instance_ids(
                targets.panoptic[b].long(), crowd, thing_classes=sorted(thing_set), ignore_label=ignore_label,
                label_divisor=label_divisor, max_thing_id=max_thing_id)
            small_ids = strided_downsample(ids, output_size).reshape(-1)
            pixel_mask_id[b] = torch.where(small_ids >= 0, small_ids, pixel_mask_id[b])

    # Mask areas by scattering into G + 1 bins, the last bin collecting the pixels without a mask.
    bins = torch.where(pixel_mask_id >= 0, pixel_mask_id, num_masks)
    area = torch.zeros(batch, num_masks + 1, device=device).scatter_add_(
        1, bins, torch.ones_like(bins, dtype=torch.float32))[:, :num_masks]
    stuff_class = torch.as_tensor(stuff_classes, dtype=torch.int64, device=device).expand(batch, -1)
    mask_class = torch.cat([thing_class, stuff_class], dim=1)
    mask_class = torch.where(area > 0.5, mask_class, -1)

    pixel_area = torch.where(pixel_mask_id >= 0, area.gather(1, pixel_mask_id.clamp(min=0)), 0.0)
    height, width = output_size
    inverse_mask_area = height * width / pixel_area.clamp(min=1.0)
    return MaskTargets(pixel_mask_id=pixel_mask_id, non_void=small_semantic != ignore_label, mask_class=mask_class,
                       mask_area=area, inverse_mask_area=inverse_mask_area, size=(height, width))
