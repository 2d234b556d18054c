"""``polymax serve --model DIR [--task NAME]``: a local web page where you upload an image and see the model's
predictions. A model with several tasks needs ``--task`` (the default task); each request may still ask for
another task or ``all`` (the page's task selector, or ``?task=NAME``).

Listens on 127.0.0.1 (this machine only) unless ``--host`` says otherwise; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse

HELP = "start a local web page for predictions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="DIR", help="model directory (config.json + model.safetensors)")
    source.add_argument("--onnx", metavar="FILE", help="a graph written by `polymax export onnx`")
    parser.add_argument("--task", metavar="NAME",
                        help="the default task (default: the model's only task); a request may ask for another or all")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes the demo to your network)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="fp32 (default), or bf16 / fp16 autocast (PyTorch models; fastest on GPUs)")
    parser.add_argument("--compile", action="store_true",
                        help="run the model through torch.compile (the first image of each size compiles)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload (default 20 MB)")
    parser.add_argument("--max-pixels", type=int, default=50_000_000, metavar="N",
                        help="largest accepted image in pixels, checked before decoding (default 50 000 000)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="seconds a connection may stall before it is closed (default 30)")


def run(args: argparse.Namespace) -> int:
    from polymax.errors import UserError
    from polymax.inference.predictor import Predictor
    from polymax.serve.app import serve

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0..65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise UserError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if args.max_pixels < 1 or args.timeout <= 0:
        raise UserError("--max-pixels and --timeout must be positive")
    if args.onnx:
        if args.precision != "fp32" or args.compile:
            raise UserError("--precision and --compile apply to --model; an ONNX graph runs as exported")
        predictor = Predictor.from_onnx(args.onnx, task=args.task)
    else:
        from polymax.io.pretrained import read_config

        read_config(args.model).task(args.task)   # a wrong or missing --task fails before the weights are loaded
        predictor = Predictor.from_pretrained(args.model, task=args.task, device=args.device,
                                              precision=args.precision, compile=args.compile)
    serve(predictor, host=args.host, port=args.port, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
          max_pixels=args.max_pixels, timeout=args.timeout)
    return 0
