"""``polymax presets``: list the model presets (name, backbone, tasks, data set), optionally with parameter counts."""

from __future__ import annotations

import argparse

HELP = "list the model presets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", action="store_true",
                        help="also count inference parameters (builds every model on the meta device)")
    parser.add_argument("filter", nargs="?", default="", help="only presets whose name contains this text")


def run(args: argparse.Namespace) -> int:
    from polymax.presets import PRESETS

    rows = []
    for name, make in PRESETS.items():
        if args.filter not in name:
            continue
        config = make()
        row = [name, config.backbone.name, ",".join(config.task_names), config.dataset.name]
        if args.params:
            from polymax.tools.analysis import count_preset_parameters
            row.append(f"{count_preset_parameters(config) / 1e6:.2f}M")
        rows.append(row)
    header = ["preset", "backbone", "tasks", "data set"] + (["inference params"] if args.params else [])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
