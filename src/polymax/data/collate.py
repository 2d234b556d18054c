"""Stack equally sized Samples into a :class:`Batch` (images + :class:`polymax.structures.Targets`).

A Targets field is None when no sample in the batch has that label, so the trainer computes only the
losses whose labels exist. When some samples have a label and others do not (mixed sources), the missing
ones are filled with the invalid value (semantic 255, panoptic void, depth 0, normals 0, crowd False):
those pixels are then ignored, never mislabelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from polymax.data.sample import Sample
from polymax.errors import UserError
from polymax.structures import Targets


@dataclass
class Batch:
    """images: float32 (B, 3, H, W), RGB 0..255 (the model normalises). targets: per-pixel labels (B, H, W)
    or normals (B, 3, H, W), None where absent. names: one identifier per sample."""

    images: Tensor
    targets: Targets
    names: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = lambda x: None if x is None else x.to(device, non_blocking=non_blocking)
        targets = Targets(**{name: move(getattr(self.targets, name)) for name in self.targets.__dataclass_fields__})
        return Batch(images=move(self.images), targets=targets, names=list(self.names))

    def pin_memory(self) -> Batch:
        pin = lambda x: None if x is None else x.pin_memory()
        targets = Targets(**{name: pin(getattr(self.targets, name)) for name in self.targets.__dataclass_fields__})
        return Batch(images=pin(self.images), targets=targets, names=list(self.names))


def _stack(samples: list[Sample], name: str, fill: float | int | bool, dtype: torch.dtype,
           shape: tuple[int, ...]) -> Tensor | None:
    values = [getattr(s, name) for s in samples]
    if all(v is None for v in values):
        return None
    out = []
    for sample, value in zip(samples, values):
        if value is None:
            out.append(torch.full(shape, fill, dtype=dtype))
        elif tuple(value.shape) != shape:
            raise UserError(f"sample {sample.name!r}: {name} has shape {tuple(value.shape)}, expected {shape} "
                            "(labels must match the image size)")
        else:
            out.append(value.to(dtype))
    return torch.stack(out)


def collate(samples: list[Sample], *, ignore_label: int = 255, label_divisor: int = 1000) -> Batch:
    """List of Samples of one size → Batch. Raises UserError naming the samples when sizes differ
    (use a crop / TrainAugmentation(crop_size=...) or batch size 1 for evaluation at native size)."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    height, width = samples[0].image.shape[-2:]
    for sample in samples[1:]:
        if tuple(sample.image.shape[-2:]) != (height, width):
            raise UserError(f"cannot batch images of different sizes: {samples[0].name!r} is {width}x{height}, "
                            f"{sample.name!r} is {sample.image.shape[-1]}x{sample.image.shape[-2]}; crop or resize "
                            "them to one size (training crop_size) or use batch size 1")
    images = torch.stack([s.image.to(torch.float32) for s in samples])
    plane = (height, width)
    targets = Targets(
        semantic=_stack(samples, "semantic", ignore_label, torch.int64, plane),
        panoptic=_stack(samples, "panoptic", ignore_label * label_divisor, torch.int64, plane),
        depth=_stack(samples, "depth", 0.0, torch.float32, plane),
        normals=_stack(samples, "normals", 0.0, torch.float32, (3, height, width)),
        crowd=_stack(samples, "crowd", False, torch.bool, plane),
    )
    return Batch(images=images, targets=targets, names=[s.name for s in samples])
