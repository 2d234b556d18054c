"""Per-class results of a segmentation metric: one row per class, one column per measure.

Values are fractions in [0, 1] (counts for ``tp`` / ``fp`` / ``fn``); NaN where a class has nothing to measure
(it occurs neither in the ground truth nor in the predictions, or COCO reports −1 for it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClassTable:
    """``columns`` name the measures; ``values[column]`` holds one value per entry of ``names`` (class names,
    in class order); ``classes`` are the classes' indices 0..C−1; ``things`` marks thing classes."""

    task: str
    columns: tuple[str, ...]
    names: tuple[str, ...]
    classes: tuple[int, ...]
    values: dict[str, list[float]] = field(default_factory=dict)
    things: tuple[bool, ...] = ()

    def rows(self) -> list[dict]:
        """One dict per class: class, name, isthing (when known) and each column (None for NaN)."""
        rows = []
        for position, (index, name) in enumerate(zip(self.classes, self.names)):
            row: dict = {"class": index, "name": name}
            if self.things:
                row["isthing"] = self.things[position]
            for column in self.columns:
                value = float(self.values[column][position])
                row[column] = None if math.isnan(value) else (int(value) if column in COUNTS else value)
            rows.append(row)
        return rows


COUNTS = ("tp", "fp", "fn")


def class_table(task: str, columns: dict[str, np.ndarray], *, names, classes=None, things=None) -> ClassTable:
    """A ClassTable from per-class arrays (``columns``: name → (C,) values for ``classes``, default 0..C−1)."""
    classes = tuple(range(len(names))) if classes is None else tuple(int(c) for c in classes)
    return ClassTable(task=task, columns=tuple(columns), names=tuple(names[c] for c in classes), classes=classes,
                      values={k: [float(v) for v in np.asarray(values)] for k, values in columns.items()},
                      things=() if things is None else tuple(bool(t) for t in things))
