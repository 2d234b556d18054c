"""``polymax train``: train a model from a preset, an optional YAML recipe and command-line overrides.

Precedence: TrainConfig defaults < ``--config FILE`` < the flags below < ``--set section.field=value``.
The model is set the same way: ``--set model.kmax_decoder.num_queries=32`` or ``--set model.tasks.depth.max_depth=20``
(any ModelConfig field; see ``polymax.config.train``).
Writes ``OUT/last/`` (a model directory that ``polymax.load_model`` reads, plus ``training_state.pt`` and
``train_config.yaml``), ``OUT/scalars.jsonl`` and, with the ``log`` extra, TensorBoard logs in ``OUT/tb``
(scalars, the config, prediction pictures). ``--keep-best METRIC`` also keeps ``OUT/best/`` (same layout) and
``OUT/best.json``; ``--set tracker=wandb|mlflow`` sends the scalars to an experiment tracker too.
Multi-GPU / multi-process: ``torchrun --nproc_per_node=P -m polymax train ...`` (``--batch-size`` stays the
global batch; each rank loads its own share).
"""

from __future__ import annotations

import argparse
import os
import sys

HELP = "train a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="model preset (see `polymax presets`); default: the config's model.preset")
    parser.add_argument("--config", metavar="FILE", help="YAML training recipe, e.g. configs/kmax_r50_coco.yaml")
    parser.add_argument("--steps", type=int, help="optimiser steps to train for (the schedule's length)")
    parser.add_argument("--batch-size", type=int, help="global batch per optimiser step (all ranks together)")
    parser.add_argument("--out", metavar="DIR", help="output folder (checkpoint in DIR/last)")
    parser.add_argument("--resume", nargs="?", const="yes", default="no", metavar="auto",
                        help="continue the run whose checkpoint is in DIR/last; --resume auto: continue if there is "
                             "one, start otherwise (one command for torchrun --max-restarts and requeued jobs)")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="with --resume: accept a batch size, learning rate, data set or smaller --steps "
                             "that differ from the checkpoint's (a larger --steps extends a run without it)")
    parser.add_argument("--dataset", help="data set name (default: synth, the built-in synthetic scenes)")
    parser.add_argument("--data-root", metavar="DIR", help="folder holding the data set's files")
    parser.add_argument("--skip-data-check", action="store_true",
                        help="start without decoding every training sample first (for huge data sets)")
    parser.add_argument("--device", help="auto (default), cpu or cuda")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                        help="bf16 autocast (CPU and GPU), fp16 autocast with loss scaling, or fp32")
    parser.add_argument("--workers", type=int, help="data-loading processes per rank")
    parser.add_argument("--keep-best", metavar="METRIC",
                        help="also keep DIR/best, the checkpoint of the best evaluation by METRIC as the evaluation "
                             "names it (pq, miou, abs_rel; depth/abs_rel with several tasks); needs --set "
                             "eval_every=N. Lower is better for the error metrics (abs_rel, rms, ..., mean, median), "
                             "higher for the rest; --set keep_best_mode=min|max to choose")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, e.g. --set optim.lr=1e-4, or a model field, e.g. "
                             "--set model.kmax_decoder.num_queries=32 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def resolve(args: argparse.Namespace):
    """The TrainConfig these arguments describe (checked, not yet run)."""
    from polymax.build import resolve_config
    from polymax.config.train import load_config
    from polymax.errors import UserError

    flags = {"model.preset": args.preset, "steps": args.steps, "data.batch_size": args.batch_size,
             "out_dir": args.out, "data.dataset": args.dataset, "data.root": args.data_root,
             "device": args.device, "precision": args.precision, "data.workers": args.workers,
             "progress": False if args.no_progress else None,
             "keep_best": _quoted(getattr(args, "keep_best", None))}
    if getattr(args, "skip_data_check", False):
        flags["data.check"] = "false"
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None] + list(args.overrides)
    notes: list[str] = []
    config = load_config(args.config, overrides=overrides, notes=notes)
    if os.environ.get("RANK", "0") == "0":
        for note in notes:                  # defaults chosen for this run's length, one line each
            print(note)
    # An unknown preset, or a model override naming a task the preset lacks, fails here before anything is written.
    resolve_config(config.model.preset, **config.model.overrides)
    if config.data.root is not None:
        from pathlib import Path
        if not Path(config.data.root).is_dir():
            raise UserError(f"data root {config.data.root} does not exist or is not a folder")
    return config


def _quoted(text: str | None) -> str | None:
    """A string flag as a YAML string, so that a name such as ``delta1`` or ``1e3`` stays text in the override."""
    import json

    return None if text is None else json.dumps(text)


def run(args: argparse.Namespace) -> int:
    from polymax.errors import UserError

    if args.resume not in ("yes", "no", "auto"):
        raise UserError(f"--resume takes no value or 'auto', got {args.resume!r}")
    config = resolve(args)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    from polymax.engine.train import train

    resume = {"yes": True, "no": False, "auto": "auto"}[args.resume]
    result = train(config, resume=resume, allow_config_change=args.allow_config_change)
    if result.interrupted is not None:
        if os.environ.get("RANK", "0") == "0":
            print(f"polymax train: interrupted at step {result.step}; checkpoint in {result.checkpoint} (run the same "
                  "command with --resume to continue)", file=sys.stderr)
        return 128 + int(result.interrupted)  # the shell convention for "terminated by signal N"
    if result.checkpoint is not None and os.environ.get("RANK", "0") == "0":
        print(f"trained {result.step} steps; model and training state in {result.checkpoint}")
    return 0



