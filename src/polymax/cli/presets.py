"""``polymax presets``: list the model presets (name, backbone, tasks, data set), optionally with parameter counts,
then the VQ-VAE tokenizer presets that ``polymax train-tokenizer --preset`` trains (AiT's depth and mask tokens)."""

from __future__ import annotations

import argparse
import sys

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
    tokenizers = _tokenizer_rows(args.filter)
    if not rows and not tokenizers:
        print(f"polymax presets: no preset name contains {args.filter!r}; run `polymax presets` for the list",
              file=sys.stderr)
        return 1
    if rows:
        header = ["preset", "backbone", "tasks", "data set"] + (["inference params"] if args.params else [])
        _print_table(header, rows)
    if tokenizers:
        print(("\n" if rows else "") + "tokenizer presets (polymax train-tokenizer --preset NAME):")
        _print_table(["preset", "kind", "input", "tokens", "codebook"], tokenizers)
    return 0


def _tokenizer_rows(name_filter: str) -> list[list[str]]:
    from polymax.tokenizer.presets import TOKENIZER_PRESETS

    rows = []
    for name, make in TOKENIZER_PRESETS.items():
        if name_filter not in name:
            continue
        config = make()
        side = config.image_size // config.downsample_ratio
        rows.append([name, config.kind, f"{config.image_size}²", f"{side}×{side}",
                     f"{config.num_codes} × {config.code_dim}"])
    return rows


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
