"""Evaluate a model on a data set: run it, decode each task's output into maps at the image's own size (the
same :mod:`polymax.tasks` decoding the predictor uses), feed the task's metrics.

Panoptic tasks report PQ / SQ / RQ (all, things, stuff) and mIoU (from the threshold-free semantic map, as
deeplab2 computes it); semantic tasks mIoU; instance tasks mask AP; depth the depth metrics; normals the
angular ones.

Geometry (spec §3): with ``resize_longer_side`` the image is resized (bilinear, align_corners) so that its
longer side has that length, the model pads it to a 32k+1 size itself, panoptic merging runs at that padded
size (as deeplab2 evaluates), and the maps are brought back to the raw size — labels with nearest neighbours,
depth / normals bilinearly. Without it the model sees the raw image.

Conventions carried by the data: a data set with a depth ``protocol`` (:mod:`polymax.data.protocol`; NYUD-v2
however it is read) has depth scored on the protocol's crop and valid range, whatever the model was trained on.
``flip=True`` (semantic, depth, normals): each image's map is averaged with the flipped image's, flipped back
(normals' n_x negated), by :func:`polymax.inference.tta.predict_dense`.

Sharded (``context`` with world_size W > 1, e.g. ``torchrun --nproc_per_node W -m polymax eval``): rank r runs
the r-th contiguous block of the batches, then every rank gathers every rank's metric states (``state()``) and
merges them in rank order (``merge()``), so the metrics are those of one process that saw every batch: counts
and confusion matrices add exactly, COCO AP sees the same images, ids and order, and the float sums (panoptic
IoU sums, depth and normal-angle sums, all float64) differ only by the order of the additions (~1e-16
relative). Every rank returns the same metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from polymax.engine import distributed
from polymax.errors import UserError
from polymax.geometry import Geometry, padded_size, resize_bilinear
from polymax.inference.runner import AUTOCAST
from polymax.inference.tta import predict_dense
from polymax.structures import DepthResult, NormalsResult, SegmentationResult
from polymax.tasks import get_task
from polymax.tasks.base import output_slice
from polymax.tasks.depth import resize_scale

# Flip-TTA map of one image (V, H, W) at the raw size → the task's result (what its metrics read); depth in the
# raw image's metres (× the resize factor, as the depth task's own decoding does).
FLIP_RESULTS = {
    "semantic": lambda values, geometry: SegmentationResult(
        task="semantic", size=geometry.original, semantic=values.argmax(0).cpu().numpy().astype("int32")),
    "depth": lambda values, geometry: DepthResult(
        task="depth", size=geometry.original, depth=(values[0] * resize_scale(geometry)).cpu().numpy()),
    "normals": lambda values, geometry: NormalsResult(
        task="normals", size=geometry.original, normals=values.permute(1, 2, 0).cpu().numpy()),
}

PANOPTIC_COLUMNS = ("pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff", "sq_stuff", "rq_stuff")


@torch.no_grad()
def evaluate(model: nn.Module, *, dataset: Sequence, task: str | Sequence[str] | None = None, batch_size: int = 1,
             device: torch.device | str = "cpu", precision: str = "fp32", max_batches: int | None = None,
             resize_longer_side: int | None = None, progress: bool = False, flip: bool = False,
             compile: bool = False, context: distributed.DistributedContext | None = None,
             per_class: dict | None = None) -> dict[str, float]:
    """Metrics of ``model`` (with ``.config``) over ``dataset`` (Samples, any sizes when batch_size is 1).

    ``task``: a task name, several, or None for every task of the model; with more than one task the keys are
    prefixed ``"<task>/"``. One forward pass per batch serves every task. ``precision``: 'fp32', or 'bf16' /
    'fp16' autocast (maps are decoded in float32); ``compile``: run the model through ``torch.compile``.
    ``context``: this process's rank when the images are split over several (module docstring); every rank
    must call ``evaluate`` with the same arguments. ``per_class``: a dict that receives task →
    :class:`~polymax.metrics.class_table.ClassTable` for the tasks whose metrics have per-class results (from the
    merged states when sharded)."""
    from tqdm import tqdm

    from polymax.data.collate import collate
    from polymax.data.protocol import protocol_of

    if precision not in AUTOCAST:
        raise UserError(f"precision must be one of {', '.join(AUTOCAST)}, got {precision!r}")
    context = context or distributed.DistributedContext()
    config = model.config
    names = tuple(model.tasks) if task is None else (task,) if isinstance(task, str) else tuple(task)
    settings = {name: config.task(name) for name in names}   # a one-line error for a task the model lacks
    if flip and set(names) - set(FLIP_RESULTS):
        others = sorted(set(names) - set(FLIP_RESULTS))
        raise UserError(f"--flip works for the {', '.join(FLIP_RESULTS)} tasks, not {others}")
    metrics = {name: get_task(name).build_metrics(config, task) for name, task in settings.items()}
    protocol = protocol_of(dataset)
    for metric in metrics.values():
        if protocol is not None and hasattr(metric, "use_protocol"):
            metric.use_protocol(protocol)     # the data's crop and range, not the model's
    decoders = {name: get_task(name).build_decoder(config, task) for name, task in settings.items()}
    info = config.dataset
    total = math.ceil(len(dataset) / batch_size)
    total = total if max_batches is None else min(max_batches, total)
    # Whole batches per rank, so that every batch holds the images it holds in one process.
    mine = distributed.shard(total, context)
    images_of_mine = range(mine.start * batch_size, min(mine.stop * batch_size, len(dataset)))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, images_of_mine), batch_size=batch_size, shuffle=False,
        collate_fn=lambda samples: collate(samples, ignore_label=info.ignore_label, label_divisor=info.label_divisor))
    model.eval()
    network = torch.compile(model) if compile else model
    autocast = AUTOCAST[precision]
    for batch in tqdm(loader, total=len(mine), disable=not (progress and context.is_main), desc="eval", unit="batch"):
        images, targets = batch.images.to(device), batch.targets
        raw_size = tuple(images.shape[-2:])
        images = _resize_longer_side(images, resize_longer_side)
        content = tuple(images.shape[-2:])
        geometry = Geometry(original=raw_size, content=content, network=padded_size(content))
        with torch.autocast(torch.device(device).type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            if flip:
                for name in names:
                    maps = predict_dense(network, images, task=name, flip=True, output_size=raw_size,
                                         task_config=settings[name]).float()
                    for slot in range(images.shape[0]):
                        metrics[name].update(FLIP_RESULTS[name](maps[slot], geometry), targets, slot)
                continue
            output = network(images, task=names)
        for name in names:
            final = output[name].final
            for slot in range(images.shape[0]):
                metrics[name].update(decoders[name](output_slice(final, slot), geometry), targets, slot)
    if context.enabled:
        merge_ranks(metrics, context)
    results: dict[str, float] = {}
    for name, metric in metrics.items():
        prefix = f"{name}/" if len(names) > 1 else ""
        results.update({prefix + key: value for key, value in metric.compute().items()})
        if per_class is not None and hasattr(metric, "per_class"):
            per_class[name] = metric.per_class()
    return results


def merge_ranks(metrics: dict[str, object], context: distributed.DistributedContext) -> None:
    """Replace each rank's metric states by the merge of every rank's, in rank order (one all-gather).

    A task's metrics object either has ``state()`` / ``merge(state)`` and ``reset()`` itself, or keeps its state in
    attributes that do (the :mod:`polymax.metrics` classes)."""
    parts = {name: _mergeable_parts(name, metric) for name, metric in metrics.items()}
    mine = {name: [part.state() for part in task_parts] for name, task_parts in parts.items()}
    every_rank = distributed.gather_objects(context, mine)
    for name, task_parts in parts.items():
        for index, part in enumerate(task_parts):
            part.reset()
            for states in every_rank:         # rank order = image order
                part.merge(states[name][index])


def _mergeable_parts(name: str, metric: object) -> list:
    def mergeable(value: object) -> bool:
        return all(callable(getattr(value, method, None)) for method in ("state", "merge", "reset"))

    if mergeable(metric):
        return [metric]
    parts = [value for value in vars(metric).values() if mergeable(value)]
    if not parts:
        raise UserError(f"the {name} task's metrics cannot be combined across processes (no state() / merge()); "
                        "evaluate it in one process")
    return parts


def _resize_longer_side(images: torch.Tensor, length: int | None) -> torch.Tensor:
    if not length:
        return images
    height, width = images.shape[-2:]
    scale = length / max(height, width)
    size = (max(round(height * scale), 1), max(round(width * scale), 1))
    return resize_bilinear(images, size)


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
