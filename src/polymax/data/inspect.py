"""What a data set holds, read sample by sample as training reads it: the summary ``polymax data inspect``
prints, and the check ``polymax train`` runs before step 1 (:func:`check_dataset`).

Decoding a sample runs every check its loader has: each label file present, label sizes equal to the image's,
class ids inside the label space, depth / normals encodings (bit depth, channels), pixel limits. The first
failure is a UserError naming the file.
"""

from __future__ import annotations

import torch

from polymax.errors import UserError


def check_dataset(dataset, *, name: str, split: str) -> int:
    """Decode every sample of a training set before step 1; the first bad file ends it with one line naming
    the file (and the way to skip the check). Returns the number of samples checked."""
    print(f"checking the {len(dataset)} samples of {name}/{split} before training "
          "(--skip-data-check skips this)", flush=True)
    try:
        inspect_dataset(dataset, name=name, split=split)
    except UserError as error:
        raise UserError(f"data check before step 1: {error} (fix or remove the file; --skip-data-check skips "
                        "this check)") from None
    return len(dataset)


def inspect_dataset(dataset, *, name: str, split: str, limit: int | None = None, top: int = 10,
                    skip_bad: bool = False) -> dict:
    """Decode samples and summarise them (the JSON that ``polymax data inspect`` prints).

    The first unreadable sample raises its UserError (naming the file) unless ``skip_bad``, in which case
    it is counted under ``skipped`` with its message.
    """
    info = getattr(dataset, "info", None)
    total = len(dataset)
    count = total if limit is None else min(limit, total)
    labels = {"semantic": 0, "panoptic": 0, "depth": 0, "normals": 0, "crowd": 0}
    histogram: dict[int, int] = {}
    depth_min, depth_max, depth_valid, pixels = float("inf"), 0.0, 0, 0
    normals_valid, instances = 0, 0
    heights, widths = set(), set()
    errors: list[str] = []
    for index in range(count):
        try:
            sample = dataset[index]
        except UserError as error:
            if not skip_bad:
                raise
            errors.append(str(error))
            continue
        height, width = sample.image.shape[-2:]
        heights.add(int(height))
        widths.add(int(width))
        pixels += int(height) * int(width)
        for key in labels:
            labels[key] += getattr(sample, key) is not None
        if sample.semantic is not None:
            values, counts = torch.unique(sample.semantic, return_counts=True)
            for value, number in zip(values.tolist(), counts.tolist()):
                histogram[value] = histogram.get(value, 0) + number
        if sample.panoptic is not None and info is not None:
            ids = torch.unique(sample.panoptic)
            instances += int(((ids % info.label_divisor) > 0).sum())
        if sample.depth is not None:
            valid = sample.depth[sample.depth > 0]
            depth_valid += valid.numel()
            if valid.numel():
                depth_min, depth_max = min(depth_min, float(valid.min())), max(depth_max, float(valid.max()))
        if sample.normals is not None:
            normals_valid += int((sample.normals.abs().sum(0) > 0).sum())
    summary = {
        "dataset": name, "split": split, "num_samples": total, "inspected": count,
        "labels": {key: value > 0 for key, value in labels.items()},
        "label_counts": labels,
    }
    if heights:
        summary["image_size"] = {"height": [min(heights), max(heights)], "width": [min(widths), max(widths)]}
    if histogram:
        summary["classes"] = _class_summary(histogram, info, top)
    if labels["panoptic"]:
        summary["instances"] = instances
    if labels["depth"]:
        summary["depth"] = {"min": None if depth_valid == 0 else round(depth_min, 4),
                            "max": None if depth_valid == 0 else round(depth_max, 4),
                            "valid_fraction": round(depth_valid / max(pixels, 1), 4)}
    if labels["normals"]:
        summary["normals"] = {"valid_fraction": round(normals_valid / max(pixels, 1), 4)}
    if skip_bad:
        summary["skipped"] = len(errors)
        summary["skipped_errors"] = errors[:10]
    return summary


def _class_summary(histogram: dict[int, int], info, top: int) -> dict:
    ignore = 255 if info is None else info.ignore_label
    names = () if info is None else info.class_names
    labelled = {k: v for k, v in histogram.items() if k != ignore}
    total = sum(histogram.values())
    ordered = sorted(labelled.items(), key=lambda item: -item[1])
    name = lambda k: names[k] if 0 <= k < len(names) else str(k)
    return {
        "num_classes": len(names) if names else None,
        "present": len(labelled),
        "ignore_fraction": round(histogram.get(ignore, 0) / max(total, 1), 4),
        "top": [{"id": k, "name": name(k), "fraction": round(v / max(total, 1), 4)} for k, v in ordered[:top]],
    }

