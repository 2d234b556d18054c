"""Does a data set carry the labels a model's tasks train on? One line that says which option adds them."""

from __future__ import annotations

from collections.abc import Sequence

from polymax.errors import UserError

# (data set, label field) → how to add that label.
HOW_TO_ADD = {("nyuv2", "normals"): "pass --set data.normals_dir=DIR (8-bit GeoNet-style normal PNGs named by "
                                    "frame, see polymax.data.nyuv2)",
              ("folder", "normals"): "add a normals/ folder of 8-bit normal PNGs (see polymax.data.folder)",
              ("folder", "depth"): "add a depth/ folder of 16-bit PNGs or .npy files (see polymax.data.folder)"}


def missing_labels(sample, tasks: Sequence[str]) -> list[str]:
    """The label fields of ``tasks`` that ``sample`` lacks. Segmentation tasks may read either semantic or
    panoptic ids, so only the depth and normals tasks' own labels are required here."""
    return [task for task in tasks if task in ("depth", "normals") and getattr(sample, task, None) is None]


def require_labels(dataset: Sequence, tasks: Sequence[str], *, preset: str, name: str, split: str) -> None:
    """Raise one line when the first sample lacks a label that one of ``tasks`` (depth / normals) needs."""
    if len(dataset) == 0:
        return
    missing = missing_labels(dataset[0], tasks)
    if missing:
        field = missing[0]
        how = HOW_TO_ADD.get((name, field), f"choose a data set with {field} labels")
        raise UserError(f"{preset!r} has a {field} task, but the {name} {split} split has no {field} labels; {how}")
