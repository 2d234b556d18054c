"""``polymax export onnx --model DIR --out FILE [--task NAME | any | a,b] [--height H --width W | --dynamic]
[--exporter torchscript|dynamo] [--check]``: write an ONNX graph of one task, or (``--task any``: every task of the
model; ``--task a,b``: those) one graph with the task as a second input, an int64 index into the list the
export prints and stores in the graph's metadata (``polymax_tasks``). The latter needs tasks chosen by a task
token that share their head and outputs (OneFormer's panoptic / semantic / instance); otherwise a one-line
error says to export one graph per task.

The graph is the network only (see :mod:`polymax.export.onnx` for its inputs, outputs and geometry);
``polymax predict --onnx FILE`` runs it with the same pre- and post-processing as a PyTorch model.
``--check`` runs the graph in onnxruntime next to PyTorch on one input and prints the largest difference.
"""

from __future__ import annotations

import argparse

HELP = "export a model (ONNX)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=("onnx",), help="export format")
    parser.add_argument("--model", required=True, metavar="DIR", help="model directory")
    parser.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    parser.add_argument("--task", metavar="NAME", help="the task to export (default: the model's only task); 'any' "
                        "(every task) or a,b: one graph with an int64 'task' input choosing among them (tasks "
                        "conditioned by a task token with one head, e.g. OneFormer's)")
    parser.add_argument("--height", type=int, help="static input height (default: the preset's crop size)")
    parser.add_argument("--width", type=int, help="static input width (default: the preset's crop size)")
    parser.add_argument("--dynamic", action="store_true",
                        help="any batch size and any input size of the form 32k+1 (padding done by the caller)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default 17; 18 with --exporter dynamo, its lowest)")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="torch.onnx exporter (default torchscript; dynamo needs onnxscript, opset >= 18 and "
                             "takes 4-8x the CPU time to export, with the same outputs)")
    parser.add_argument("--check", action="store_true",
                        help="compare onnxruntime with PyTorch on one input and print the max abs difference")


def run(args: argparse.Namespace) -> int:
    from polymax.export.onnx import export_onnx
    from polymax.io.pretrained import load_model

    model = load_model(args.model)
    result = export_onnx(model, args.out, task=args.task, height=args.height, width=args.width, dynamic=args.dynamic,
                         opset=args.opset, exporter=args.exporter)
    geometry = "dynamic (B, 3, 32k+1, 32k+1)" if result.input_size is None else \
        f"(1, 3, {result.input_size[0]}, {result.input_size[1]})"
    inputs = f"images {geometry}"
    if result.tasks:
        choices = ", ".join(f"{index} = {name}" for index, name in enumerate(result.tasks))
        inputs += f" + task int64 scalar ({choices})"
    print(f"wrote {result.path}: {result.task}, {inputs} → {', '.join(result.outputs)}")
    if args.check:
        for task in result.tasks or (result.task,):
            difference = parity(model, result, task)
            print(f"onnxruntime vs PyTorch{f' ({task})' if result.tasks else ''}, max abs difference: "
                  + ", ".join(f"{name} {value:.2e}" for name, value in difference.items()))
    return 0


def parity(model, result, task: str | None = None) -> dict[str, float]:
    """Max abs difference per output between onnxruntime and PyTorch on one random input (``task``: the task of a
    graph with a task input; default the graph's task)."""
    import torch

    from polymax.export.onnx import OnnxRunner
    from polymax.geometry import padded_size

    size = result.input_size or padded_size(tuple(model.config.crop_size))
    images = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 255
    task = task or result.task
    exported = OnnxRunner(result.path, task=task).run_arrays(images)
    with torch.no_grad():
        reference = model.eval()(images, task=task)[task].final
    return {name: float((exported[name] - getattr(reference, name)).abs().max()) for name in result.outputs}
