"""``polymax bench``: parameters, FLOPs, latency, throughput, peak memory and the fraction of the machine's
matrix-multiply throughput one model achieves. See :mod:`polymax.tools.bench`.

    polymax bench --preset kmax_r50_coco --size 641 --batch 1
    polymax bench --preset kmax_r50_coco --size 1281 --fuse --channels-last --json
    polymax bench --preset kmax_tiny_test --size 129 --train
    polymax bench --preset kmax_r50_coco --size 257 --batch 2 --train --set checkpoint_backbone=true
"""

from __future__ import annotations

import argparse
import json

HELP = "measure parameters, FLOPs, latency, throughput and memory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="kmax_r50_coco", help="model preset (default: kmax_r50_coco)")
    parser.add_argument("--size", type=int, nargs="+", default=[641], metavar="H [W]",
                        help="input height and width in pixels (one number: square; default 641)")
    parser.add_argument("--batch", type=int, default=1, help="images per run (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="fp32, or bfloat16 / float16 autocast (weights stay float32; fp16 training steps "
                             "scale the loss with a GradScaler; default fp32)")
    parser.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format for convs")
    parser.add_argument("--fold", action="store_true",
                        help="fold BatchNorms into the preceding convolutions (inference only)")
    parser.add_argument("--fuse", action="store_true",
                        help="fold, then fuse activations and residual adds into the convolutions (CPU, "
                             "inference only; the setting `polymax predict` uses)")
    parser.add_argument("--train", action="store_true",
                        help="time a full training step (forward, losses, backward, optimiser) on synthetic targets")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                        help="a model setting in build_model's dotted dialect, e.g. checkpoint_backbone=true or "
                             "kmax_decoder.num_queries=64 (repeatable)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")


def run(args: argparse.Namespace) -> int:
    from polymax.errors import UserError
    from polymax.tools.bench import BenchSettings, format_report, run_benchmark

    if len(args.size) not in (1, 2):
        raise UserError(f"--size takes H or H W, got {len(args.size)} numbers")
    size = (args.size[0], args.size[-1])
    settings = BenchSettings(preset=args.preset, size=size, batch=args.batch, device=args.device, dtype=args.dtype,
                             compile=args.compile, channels_last=args.channels_last, fold=args.fold, fuse=args.fuse,
                             train=args.train, warmup=args.warmup, repeats=args.repeats, threads=args.threads,
                             overrides=model_settings(args.overrides))
    result = run_benchmark(settings)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def model_settings(assignments: list[str]) -> dict:
    """``build_model`` overrides from ``PATH=VALUE`` assignments (values parsed as YAML)."""
    import yaml

    from polymax.errors import UserError

    settings = {}
    for assignment in assignments:
        path, sep, text = assignment.partition("=")
        if not sep or not path.strip():
            raise UserError(f"--set {assignment!r} must look like PATH=VALUE (e.g. checkpoint_backbone=true)")
        settings[path.strip()] = yaml.safe_load(text)
    return settings
