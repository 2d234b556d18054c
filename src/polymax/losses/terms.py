"""The value every criterion returns: named, already-weighted scalar loss terms and their sum.

All criteria (kMaX panoptic / semantic, depth, normals) return :class:`LossTerms`, so the training engine
can call ``criterion(prediction, targets)``, back-propagate ``.total`` and log every term by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class LossTerms:
    """An ordered mapping term name → scalar tensor (0-dim), each already multiplied by its weight.

    Names follow deeplab2 where a term has a deeplab2 counterpart (``pq_style_loss_class_term``,
    ``aux_0mask_id_cross_entropy_loss``, ``semantic_loss``, ...). Insertion order is kept for logging.
    """

    values: dict[str, Tensor] = field(default_factory=dict)

    @property
    def total(self) -> Tensor:
        """The sum of all terms (a 0-dim tensor; 0.0 when there is no term)."""
        if not self.values:
            return torch.zeros(())
        return torch.stack([value.reshape(()) for value in self.values.values()]).sum()

    def __getitem__(self, name: str) -> Tensor:
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def names(self) -> list[str]:
        return list(self.values)

    def to_floats(self) -> dict[str, float]:
        """Detached Python floats for logging, the total included under ``total_loss``."""
        floats = {name: float(value.detach()) for name, value in self.values.items()}
        floats["total_loss"] = float(self.total.detach())
        return floats

    def merged(self, other: LossTerms, prefix: str = "") -> LossTerms:
        """A new LossTerms with ``other``'s terms appended (names prefixed); a name clash is an error."""
        values = dict(self.values)
        for name, value in other.values.items():
            key = prefix + name
            if key in values:
                raise ValueError(f"loss term {key!r} is defined twice")
            values[key] = value
        return LossTerms(values)
