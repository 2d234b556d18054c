"""``polymax eval``: evaluate a saved model directory on a data set and print the task's metrics.

Panoptic: PQ, SQ, RQ for all / things / stuff classes and mIoU; semantic: mIoU; instance: mask AP; depth and
normals: their metrics. ``--task NAME`` picks one task of a multi-task model (default: its only task).
``--json`` prints one JSON object (fractions, not percentages) instead. ``--flip``: flip test-time augmentation
(semantic, depth, normals). ``--set data.normals_dir=DIR`` / ``--set data.options={...}``: the data set's loader
options, as in ``polymax train``. Depth is scored on the data set's protocol (NYUD-v2: Eigen's crop, 1e-3..10 m)
when it has one (:mod:`polymax.data.protocol`). ``--precision bf16|fp16``: autocast; ``--compile``: torch.compile.
``--per-class [FILE]``: per-class tables after the summary (in the ``--json`` object under ``per_class``), also
written with the summary to FILE (:mod:`polymax.inference.class_tables`). Under ``torchrun --nproc_per_node N``
the images are split over the N processes and their metric states merged: the numbers are those of one process
(:mod:`polymax.inference.evaluate`); rank 0 prints them.
"""

from __future__ import annotations

import argparse
import json
import math

HELP = "evaluate a model on a data set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="model directory (e.g. a run's OUT/last)")
    parser.add_argument("--task", metavar="NAME", help="the task to evaluate (default: the model's only task)")
    parser.add_argument("--dataset", default="synth", help="data set name (default: synth)")
    parser.add_argument("--data-root", metavar="DIR", help="folder holding the data set's files")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (1 allows any sizes)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N batches")
    parser.add_argument("--resize-longer-side", type=int, metavar="PIXELS",
                        help="resize images so the longer side has this length (deeplab2's COCO / ADE20K "
                             "geometry: the crop size); predictions are mapped back to the raw size")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="fp32 (default), or bf16 / fp16 autocast (GPUs gain most)")
    parser.add_argument("--compile", action="store_true",
                        help="run the model through torch.compile (the first image of each size compiles)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--per-class", nargs="?", const="", default=None, metavar="FILE",
                        help="also print per-class tables (panoptic PQ/SQ/RQ and IoU, semantic IoU, instance AP); "
                             "with FILE also write them, beside the summary, as JSON")
    parser.add_argument("--flip", action="store_true",
                        help="flip test-time augmentation: average with the mirrored image's prediction "
                             "(semantic, depth, normals; normals' x negated)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.FIELD=VALUE",
                        help="a data-set option, e.g. --set data.normals_dir=DIR or "
                             "--set 'data.options={protocol: nyu, depth_scale: 0.001}' (repeatable)")
    parser.add_argument("--no-optimise", action="store_true",
                        help="run the model as built (default: BatchNorms folded and, on a CPU, fused convolutions)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from polymax.engine import distributed
    from polymax.errors import UserError

    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise UserError(f"data root {args.data_root} does not exist or is not a folder")
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        raise UserError("--batch-size and --limit must be at least 1")
    context = distributed.setup(args.device)       # torchrun: join the group, this rank's device
    try:
        return _run(args, context)
    finally:
        distributed.teardown(context)


def _run(args: argparse.Namespace, context) -> int:
    import polymax
    from polymax.data import build_dataset, generation_options
    from polymax.errors import UserError
    from polymax.inference.class_tables import format_class_table, tables_json, write_report
    from polymax.inference.evaluate import evaluate, format_table

    device = context.device
    model = polymax.load_model(args.model, map_location=device)
    task = model.config.task(args.task).name           # a one-line error listing the choices
    if not args.no_optimise:
        from polymax.inference.fuse import optimise_for_inference
        model = optimise_for_inference(model, device=device)
    options = generation_options(args.dataset, size=tuple(model.config.crop_size))
    dataset = build_dataset(args.dataset, root=args.data_root, split=args.split, **options,
                            **data_options(args.overrides))
    if len(dataset) == 0:
        raise UserError(f"the {args.dataset} {args.split} split is empty")
    from polymax.data.requirements import require_labels
    require_labels(dataset, (task,), preset=model.config.preset, name=args.dataset, split=args.split)
    tables: dict | None = None if args.per_class is None else {}
    metrics = evaluate(model, dataset=dataset, task=task, batch_size=args.batch_size, device=device,
                       precision=args.precision, max_batches=args.limit,
                       resize_longer_side=args.resize_longer_side, progress=not args.json, flip=args.flip,
                       compile=args.compile, context=context, per_class=tables)
    if not context.is_main:
        return 0
    if args.json:
        shown = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
        print(json.dumps(shown if tables is None else {**shown, "per_class": tables_json(tables)}, indent=2))
    else:
        print(f"{args.model} ({task}) on {args.dataset} / {args.split}:")
        print(format_table(metrics))
        for table in (tables or {}).values():
            print("\n" + format_class_table(table))
    if args.per_class:
        write_report(args.per_class, metrics, tables or {})
    return 0


def data_options(overrides: list[str]) -> dict:
    """``build_dataset`` keyword options from ``data.FIELD=VALUE`` assignments (the DataOptions fields
    normals_dir and options)."""
    from polymax.config.train import TrainConfig, apply_override
    from polymax.errors import UserError

    config = TrainConfig()
    for assignment in overrides:
        if assignment.partition("=")[0].strip() not in ("data.normals_dir", "data.options"):
            raise UserError(f"polymax eval --set takes data.normals_dir=DIR or data.options={{...}}, "
                            f"not {assignment!r}")
        config = apply_override(config, assignment)
    return config.data.loader_options()
