"""Panoptic / semantic / instance maps from kMaX outputs (deeplab2 ``PostProcessor``, spec §3).

Per image, with K mask logits upsampled (bilinear, align_corners) to the padded input size *before* the
softmax over K, then cropped to the input size:

* **mask-wise merging** (default, kMaX): per slot k the class c_k = argmax of the non-void class
  probabilities and its confidence; binary mask b_k = [p_k > pixel_confidence]; slots in stable descending
  order of conf^wc · s^wm are pasted onto the free pixels if their confidence passes the thing / stuff
  threshold and their free area exceeds overlap × their own area. The mask score s_k (mean p_k over b_k)
  is taken, as in deeplab2, at the model's own resolution *before* upsampling; the pasted masks are
  full-resolution.
* **pixel-wise** (MaX-DeepLab): slots below the class thresholds are dropped; a pixel takes the argmax of
  the kept slots, and is void unless that slot is also its argmax over all slots and its probability
  (softmax over the kept slots) exceeds pixel_confidence. Instance ids are 1 + slot index.
* the **semantic** map always comes from a threshold-free pixel-wise pass (argmax slot, then its argmax
  class), as deeplab2 computes mIoU.

Then stuff classes with area < stuff_area_limit and thing segments with area < thing_area_limit become void.
Conventions (ours): semantic 0..C−1 with ``ignore_label`` for void; panoptic = class·label_divisor +
instance, instance 0 for stuff, void = ignore_label·label_divisor. Thing instance ids are 1 + the slot's rank
in the paste order (deeplab2's numbering), so they are unique per image but not contiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from polymax.geometry import resize_to_input


@dataclass
class Segment:
    """One panoptic segment: id = class·label_divisor + instance; slot = the query it came from."""

    id: int
    category: int
    is_thing: bool
    area: int
    score: float
    slot: int


@dataclass
class PanopticResult:
    """Maps for one image at its original size (H, W), int64.

    semantic: classes 0..C−1 from the threshold-free pass (never void).
    panoptic: class·label_divisor + instance; void (nothing pasted, or removed by the area limits) =
        ignore_label·label_divisor.
    instance: thing instance id (> 0) on thing segments, 0 elsewhere.
    mask_id: 1 + paste rank of the slot that covers the pixel (also for segments later removed by the
        area limits), 0 where no slot was pasted; deeplab2's ``instance_pred`` is max(mask_id, 1).
    segments: the kept panoptic segments.
    """

    semantic: Tensor
    panoptic: Tensor
    instance: Tensor
    mask_id: Tensor
    segments: list[Segment] = field(default_factory=list)


class PanopticPostProcessor:
    """Callable: ``(mask_logits (B, K, h, w), class_logits (B, K, C+1), input_size) → list[PanopticResult]``.

    mask_logits are the model's final logits at the padded model resolution; input_size is the (H, W) of
    the images before padding. Thresholds as deeplab2's PostProcessor (compared in float32).
    """

    def __init__(self, *, thing_classes: tuple[int, ...], num_classes: int, ignore_label: int = 255,
                 label_divisor: int = 1000, pixel_confidence: float = 0.4, thing_confidence: float = 0.7,
                 stuff_confidence: float = 0.5, overlap: float = 0.8, reorder_class_weight: float = 1.0,
                 reorder_mask_weight: float = 1.0, thing_area_limit: int = 0, stuff_area_limit: int = 0,
                 mode: str = "maskwise") -> None:
        if mode not in ("maskwise", "pixelwise"):
            raise ValueError(f"mode must be 'maskwise' or 'pixelwise', got {mode!r}")
        self.num_classes = num_classes
        self.is_thing = torch.zeros(num_classes, dtype=torch.bool)
        self.is_thing[list(thing_classes)] = True
        self.ignore_label, self.label_divisor = ignore_label, label_divisor
        f32 = torch.float32
        self.pixel_confidence = torch.tensor(pixel_confidence, dtype=f32)
        self.thing_confidence = torch.tensor(thing_confidence, dtype=f32)
        self.stuff_confidence = torch.tensor(stuff_confidence, dtype=f32)
        self.overlap = torch.tensor(overlap, dtype=f32)
        self.reorder_class_weight, self.reorder_mask_weight = reorder_class_weight, reorder_mask_weight
        self.thing_area_limit, self.stuff_area_limit = thing_area_limit, stuff_area_limit
        self.mode = mode
        self.band_rows = 128   # rows per softmax band in mask-wise merging (memory only: results do not depend on it)

    @torch.no_grad()
    def __call__(self, mask_logits: Tensor, class_logits: Tensor, input_size: tuple[int, int]) -> list[PanopticResult]:
        if class_logits.shape[-1] != self.num_classes + 1:
            raise ValueError(f"class_logits have {class_logits.shape[-1]} channels, expected {self.num_classes} + void")
        class_probs = class_logits.float().softmax(dim=-1)[..., :-1]              # (B, K, C), void dropped
        return [self._one(mask_logits[b].float(), class_probs[b], tuple(input_size))
                for b in range(mask_logits.shape[0])]

    def _one(self, native_logits: Tensor, class_probs: Tensor, input_size: tuple[int, int]) -> PanopticResult:
        logits = resize_to_input(native_logits[None], input_size)[0]               # (K, H, W)
        confidence, classes = class_probs.max(dim=-1)                              # (K,)
        semantic = classes[logits.argmax(dim=0)]                                    # threshold-free pass, (H, W)
        threshold = torch.where(self.is_thing.to(classes.device)[classes], self.thing_confidence.to(logits.device),
                                self.stuff_confidence.to(logits.device))
        passes = confidence >= threshold
        if self.mode == "maskwise":
            # Only the thresholded masks are kept at input size, (K, H, W) bool, computed a band of rows at a
            # time (the softmax is per pixel): at 1281² with K = 128 a float copy of the logits is 840 MB.
            threshold = self.pixel_confidence.to(logits.device)
            binary = torch.cat([band.softmax(dim=0) > threshold for band in logits.split(self.band_rows, dim=1)],
                               dim=1)
            del logits
            mask_id, slot_of_id = self._maskwise(binary, native_logits, confidence, passes)
        else:
            mask_id, slot_of_id = self._pixelwise(logits, passes)
        return self._merge(mask_id, slot_of_id, classes, confidence, semantic)

    def _maskwise(self, binary: Tensor, native_logits: Tensor, confidence: Tensor, passes: Tensor
                  ) -> tuple[Tensor, dict[int, int]]:
        """binary: (K, H, W) probability > pixel confidence at the input size."""
        threshold = self.pixel_confidence.to(binary.device)
        native_probs = native_logits.softmax(dim=0)                                 # (K, h, w)
        native_binary = native_probs > threshold
        # Mean probability inside each mask at model resolution (0 for an empty mask).
        score = (native_probs * native_binary).flatten(1).sum(dim=1) / native_binary.flatten(1).sum(dim=1).clamp_min(1)
        order_score = confidence.pow(self.reorder_class_weight) * score.pow(self.reorder_mask_weight)
        order = torch.sort(order_score, descending=True, stable=True).indices
        occupied = torch.zeros_like(binary[0])
        mask_id = torch.zeros(binary.shape[1:], dtype=torch.int64, device=binary.device)
        slot_of_id: dict[int, int] = {}
        overlap = self.overlap.to(binary.device)
        for rank, slot in enumerate(order.tolist()):
            if not passes[slot]:
                continue
            # One mask's area at a time: summing all K bool masks at once makes a (K, H·W) int64 copy (1.7 GB at
            # 1281² with K = 128).
            area = binary[slot].sum()
            if area == 0:
                continue
            free = binary[slot] & ~occupied
            if not free.sum().float() > overlap * area.float():
                continue
            mask_id[free] = rank + 1
            occupied |= free
            slot_of_id[rank + 1] = slot
        return mask_id, slot_of_id

    def _pixelwise(self, logits: Tensor, passes: Tensor) -> tuple[Tensor, dict[int, int]]:
        kept = passes.nonzero().flatten()                                           # slots above the class thresholds
        mask_id = torch.zeros(logits.shape[1:], dtype=torch.int64, device=logits.device)
        if kept.numel() == 0:
            return mask_id, {}
        best, index = logits[kept].softmax(dim=0).max(dim=0)                       # (H, W) over the kept slots
        slot = kept[index]
        confident = (best > self.pixel_confidence.to(best.device)) & (logits.argmax(dim=0) == slot)
        mask_id[confident] = slot[confident] + 1
        return mask_id, {int(k) + 1: int(k) for k in kept.tolist()}

    def _merge(self, mask_id: Tensor, slot_of_id: dict[int, int], classes: Tensor, confidence: Tensor,
               semantic: Tensor) -> PanopticResult:
        void = self.ignore_label * self.label_divisor
        panoptic = torch.full_like(mask_id, void)
        instance = torch.zeros_like(mask_id)
        segments = []
        stuff_pixels: dict[int, list[tuple[int, Tensor]]] = {}
        for ident in torch.unique(mask_id).tolist():
            if ident == 0:
                continue
            slot = slot_of_id[ident]
            category = int(classes[slot])
            pixels = mask_id == ident
            if self.is_thing[category]:
                area = int(pixels.sum())
                if area >= self.thing_area_limit:
                    panoptic[pixels] = category * self.label_divisor + ident
                    instance[pixels] = ident
                    segments.append(Segment(id=category * self.label_divisor + ident, category=category,
                                            is_thing=True, area=area, score=float(confidence[slot]), slot=slot))
            else:
                stuff_pixels.setdefault(category, []).append((slot, pixels))
        # Stuff: every slot of one class is one segment; the area limit applies to their union.
        for category, parts in stuff_pixels.items():
            pixels = torch.stack([p for _, p in parts]).any(dim=0)
            area = int(pixels.sum())
            if area >= self.stuff_area_limit:
                panoptic[pixels] = category * self.label_divisor
                best = max(parts, key=lambda part: float(confidence[part[0]]))[0]
                segments.append(Segment(id=category * self.label_divisor, category=category, is_thing=False,
                                        area=area, score=float(confidence[best]), slot=best))
        return PanopticResult(semantic=semantic, panoptic=panoptic, instance=instance, mask_id=mask_id,
                              segments=segments)
