"""``polymax convert deeplab2 SRC --preset NAME --out DIR``: official checkpoint → polymax model directory.

SRC is a TensorFlow checkpoint prefix (e.g. ``ckpt-150000``; needs the ``tf`` extra) or an ``.npz`` of its
variables keyed by checkpoint name. DIR receives ``config.json`` + ``model.safetensors`` (load it with
``polymax.load_model(DIR)``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert an official checkpoint (deeplab2) to a polymax model directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source_format", choices=["deeplab2"], help="where the checkpoint comes from")
    parser.add_argument("source", type=Path,
                        help="TensorFlow checkpoint prefix, or .npz of arrays keyed by checkpoint variable names")
    parser.add_argument("--preset", required=True, help="the preset the checkpoint was trained as, e.g. kmax_r50_coco")
    parser.add_argument("--out", required=True, type=Path, help="output model directory")


def run(args: argparse.Namespace) -> int:
    from polymax.convert.deeplab2 import convert_deeplab2
    from polymax.io.pretrained import save_pretrained

    model = convert_deeplab2(args.source, args.preset)
    save_pretrained(model, args.out)
    count = sum(p.numel() for p in model.parameters())
    print(f"converted {args.source} ({args.preset}, {count / 1e6:.2f}M parameters) → {args.out}")
    return 0
