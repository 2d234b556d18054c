"""Evaluate a model on a data set: run it, turn its Prediction into the task's maps, feed the metrics.

Panoptic models report PQ / SQ / RQ (all, things, stuff) and mIoU (from the threshold-free semantic map, as
deeplab2 computes it); semantic models mIoU; depth models the depth metrics; normal models the angular ones.

Geometry (spec §3): with ``resize_longer_side`` the image is resized (bilinear, align_corners) so that its
longer side has that length, the model pads it to a 32k+1 size itself, and the label maps are brought back to
the raw size with nearest neighbours; depth / normals are resized bilinearly. Without it the model sees the
raw image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from polymax.config.model import ModelConfig
from polymax.geometry import resize_bilinear, resize_nearest

PANOPTIC_COLUMNS = ("pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff", "sq_stuff", "rq_stuff")


def build_metrics(config: ModelConfig) -> dict[str, object]:
    """The metric objects for the model's task, by role."""
    from polymax.metrics import DepthMetrics, NormalMetrics, PanopticMetrics, SemanticMetrics

    info, kind = config.dataset, config.task.kind
    if kind == "panoptic":
        return {"panoptic": PanopticMetrics(num_classes=info.num_classes, thing_classes=info.thing_classes,
                                            label_divisor=info.label_divisor, ignore_label=info.ignore_label),
                "semantic": SemanticMetrics(num_classes=info.num_classes, ignore_label=info.ignore_label)}
    if kind == "semantic":
        return {"semantic": SemanticMetrics(num_classes=info.num_classes, ignore_label=info.ignore_label)}
    if kind == "depth":
        crop = "nyu" if info.name == "nyuv2" else None
        return {"depth": DepthMetrics(min_depth=config.task.min_depth, max_depth=config.task.max_depth,
                                      eval_crop=crop)}
    if kind == "normals":
        return {"normals": NormalMetrics()}
    raise ValueError(f"no metrics for task kind {kind!r}")


@torch.no_grad()
def evaluate(model: nn.Module, *, dataset: Sequence, batch_size: int = 1, device: torch.device | str = "cpu",
             precision: str = "fp32", max_batches: int | None = None, resize_longer_side: int | None = None,
             progress: bool = False) -> dict[str, float]:
    """Metrics of ``model`` (with ``.config``) over ``dataset`` (Samples, any sizes when batch_size is 1)."""
    from tqdm import tqdm

    from polymax.build import build_postprocessor
    from polymax.data.collate import collate
    from polymax.model.heads.semantic import semantic_map

    config = model.config
    info = config.dataset
    metrics = build_metrics(config)
    # Panoptic models go through mask-wise merging (semantic map from its threshold-free pass); PolyMaX
    # semantic models (K = C) and the per-pixel baseline read the class map as argmax over K.
    postprocess = build_postprocessor(config) if "panoptic" in metrics else None
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False,
        collate_fn=lambda samples: collate(samples, ignore_label=info.ignore_label, label_divisor=info.label_divisor))
    total = len(loader) if max_batches is None else min(max_batches, len(loader))
    model.eval()
    for index, batch in enumerate(tqdm(loader, total=total, disable=not progress, desc="eval", unit="batch")):
        if index >= total:
            break
        images, targets = batch.images.to(device), batch.targets
        raw_size = tuple(images.shape[-2:])
        images = _resize_longer_side(images, resize_longer_side)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            prediction = model(images)
        if postprocess is not None:
            results = postprocess(prediction.mask_logits.float(), prediction.class_logits.float(),
                                  tuple(images.shape[-2:]))
            semantic = resize_nearest(torch.stack([r.semantic for r in results]), raw_size)
            metrics["semantic"].update(semantic.cpu(), targets.semantic)
            panoptic = resize_nearest(torch.stack([r.panoptic for r in results]), raw_size)
            metrics["panoptic"].update(panoptic.cpu(), targets.panoptic, targets.crowd)
        elif "semantic" in metrics:
            semantic = resize_nearest(semantic_map(prediction, tuple(images.shape[-2:])), raw_size)
            metrics["semantic"].update(semantic.cpu(), targets.semantic)
        if "depth" in metrics:
            metrics["depth"].update(_dense(prediction.depth, images, raw_size).cpu(), targets.depth)
        if "normals" in metrics:
            normals = F.normalize(_dense(prediction.normals, images, raw_size), dim=1)
            metrics["normals"].update(normals.cpu(), targets.normals)
    results: dict[str, float] = {}
    for role, metric in metrics.items():
        values = metric.compute()
        if role == "semantic":  # per-class IoUs stay in the metric object; the summary keeps the headline numbers
            values = {k: v for k, v in values.items() if not k.startswith("iou_")}
        results.update(values)
    return results


def _resize_longer_side(images: torch.Tensor, length: int | None) -> torch.Tensor:
    if not length:
        return images
    height, width = images.shape[-2:]
    scale = length / max(height, width)
    size = (max(round(height * scale), 1), max(round(width * scale), 1))
    if size == (height, width):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=True)


def _dense(values: torch.Tensor, images: torch.Tensor, raw_size: tuple[int, int]) -> torch.Tensor:
    """Model-resolution (B, C, h, w) → the model input's size (padding cropped) → the raw image size."""
    from polymax.model.meta_arch import resize_to_input

    return resize_bilinear(resize_to_input(values.float(), tuple(images.shape[-2:])), raw_size)


def format_table(metrics: dict[str, float]) -> str:
    """Human-readable table: the panoptic block as rows all / things / stuff, then the other numbers."""
    def cell(value: float) -> str:
        return "   n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:6.2f}"

    lines = []
    if "pq" in metrics:
        lines.append(f"{'':8}{'PQ':>8}{'SQ':>8}{'RQ':>8}")
        for label, suffix in (("all", ""), ("things", "_things"), ("stuff", "_stuff")):
            lines.append(f"{label:8}" + "".join(f"{cell(metrics.get(k + suffix)):>8}" for k in ("pq", "sq", "rq")))
    for key, value in metrics.items():
        if key in PANOPTIC_COLUMNS:
            continue
        shown = f"{cell(value)} %" if key in ("miou", "pixel_accuracy") else f"{value:8.4f}"
        lines.append(f"{key:<16}{shown}")
    return "\n".join(lines)
