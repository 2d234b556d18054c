"""The ``polymax`` command line. One module per verb under ``polymax.cli``; each defines
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.

User mistakes raise :class:`polymax.errors.UserError`; they are printed as one line on stderr and
the process exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from polymax.errors import UserError

# verb → module under polymax.cli (imported only when the verb is used, so `--help` stays fast).
VERBS = {
    "demo": "demo",
    "train": "train",
    "eval": "evaluate",
    "predict": "predict",
    "convert": "convert",
    "export": "export",
    "bench": "bench",
    "data": "data",
    "serve": "serve",
    "presets": "presets",
    "train-tokenizer": "train_tokenizer",
}

def _available_verbs() -> dict[str, str]:
    import importlib.util
    return {verb: mod for verb, mod in VERBS.items()
            if importlib.util.find_spec(f"polymax.cli.{mod}") is not None}


def build_parser(load_verb: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polymax", description="General dense prediction with k-means mask "
                                     "transformers (kMaX-DeepLab, PolyMaX) in PyTorch.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, mod in _available_verbs().items():
        if load_verb is None or verb == load_verb:
            module = importlib.import_module(f"polymax.cli.{mod}")
            p = sub.add_parser(verb, help=module.HELP, description=module.HELP)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
        else:  # only the chosen verb's module is imported; the others just need to exist as choices
            sub.add_parser(verb, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    name = f"polymax {verb}" if verb in VERBS else "polymax"
    try:  # Ctrl-C at any moment, start-up (imports, building the model) included, ends with the same line
        return _main(argv, verb)
    except UserError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str], verb: str | None) -> int:
    parser = build_parser(load_verb=verb if verb in VERBS else None)
    args = parser.parse_args(argv)
    if args.version:
        from polymax import __version__
        print(__version__)
        return 0
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if not argv else 2
    from polymax.runtime import keep_freed_memory
    keep_freed_memory()                 # large feature maps reuse freed memory (polymax/runtime.py)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
