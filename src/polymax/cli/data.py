"""``polymax data inspect``: read a data set's samples and print a JSON summary.

Every sample (or the first ``--limit``) is decoded exactly as training would read it, so a missing or
malformed file stops the command with a message naming it (exit 2). With ``--skip-bad`` unreadable samples
are counted and listed instead. ``polymax train`` runs the same checks on its training split before step 1
(:func:`polymax.data.inspect.check_dataset`; ``--skip-data-check`` for huge sets).
"""

from __future__ import annotations

import argparse
import json

from polymax.errors import UserError

HELP = "inspect a data set: sample count, labels present, class histogram, depth range"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    inspect = sub.add_parser("inspect", help="decode samples and print a JSON summary")
    inspect.add_argument("--dataset", required=True, help="synth, nyuv2, taskonomy, coco_panoptic, "
                         "cityscapes_panoptic, ade20k_panoptic or folder")
    inspect.add_argument("--root", default=None, help="folder holding the data set's files")
    inspect.add_argument("--split", default="train", help="split to read (default: train)")
    inspect.add_argument("--limit", type=int, default=None, help="read only the first N samples")
    inspect.add_argument("--top", type=int, default=10, help="classes listed in the histogram summary")
    inspect.add_argument("--skip-bad", action="store_true",
                         help="skip unreadable samples and count them instead of stopping at the first")


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `polymax --help` imports every verb's module and must not load torch.
    from polymax.data import build_dataset
    from polymax.data.inspect import inspect_dataset

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    dataset = build_dataset(args.dataset, root=args.root, split=args.split)
    print(json.dumps(inspect_dataset(dataset, name=args.dataset, split=args.split, limit=args.limit,
                                     top=args.top, skip_bad=args.skip_bad), indent=2))
    return 0
