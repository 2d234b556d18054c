"""The two torch.onnx exporters side by side: TorchScript (``dynamo=False``) and dynamo (``torch.export``, needs
``onnxscript``) on one preset of every model family, randomly initialised (seeded), exported as ``polymax export
onnx`` does (:func:`polymax.export.onnx.export_onnx`).

    python benchmarks/onnx_exporters.py [--threads 1] [--r50] [--dynamic] [--json FILE]

Per family and exporter: export seconds (wall, and the process CPU seconds: the steadier figure when other jobs
share the machine), success (or the first line of the error), and the largest abs difference between
onnxruntime (CPU) and PyTorch over every output of the graph, on one random image (``--dynamic``: the graphs
take any 32k+1 size and are checked on a second size and a batch of two). The OneFormer model is also exported
with the task as an input and checked on each of its three tasks. ``--r50`` adds kMaX-R50 (COCO) at 513×513.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# family, preset, task (None = the preset's only task; "any" = the task as a graph input), input size
FAMILIES = [
    ("kMaX", "kmax_tiny_test", None, 65),
    ("PolyMaX depth", "polymax_tiny_synth_depth", None, 65),
    ("PolyMaX normals", "polymax_tiny_synth_normals", None, 65),
    ("OneFormer (panoptic)", "oneformer_kmax_tiny_synth", "panoptic", 65),
    ("OneFormer (task input)", "oneformer_kmax_tiny_synth", "any", 65),
    ("AiT depth", "ait_tiny_synth_depth", None, 65),
    ("multi-task (normals)", "polymax_multitask_tiny_synth", "normals", 65),
    ("multi-task tokens (semantic)", "polymax_multitask_tiny_synth_tokens", "semantic", 65),
]
R50 = ("kMaX-R50", "kmax_r50_coco", None, 513)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime CPU threads (default 1)")
    parser.add_argument("--r50", action="store_true", help="also kMaX-R50 (COCO preset) at 513x513 (minutes)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic graphs (any batch, any 32k+1 size)")
    parser.add_argument("--only", nargs="+", metavar="PRESET", help="only these presets")
    parser.add_argument("--exporters", nargs="+", default=["torchscript", "dynamo"])
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's, 17 TorchScript / 18 dynamo)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    return parser.parse_args()


def difference(model, path: Path, task: str | None, tasks: tuple[str, ...], shapes: list[tuple[int, ...]],
               threads: int) -> float:
    """Largest abs difference, over every output, task (of a task-input graph) and input shape."""
    import torch

    from polymax.export.onnx import OnnxRunner

    worst = 0.0
    for name in tasks or (task,):
        runner = OnnxRunner(path, threads=threads, task=name)
        for index, shape in enumerate(shapes):
            images = torch.rand(*shape, generator=torch.Generator().manual_seed(index)) * 255
            exported = runner.run_arrays(images)
            with torch.no_grad():
                reference = model(images, task=runner.task)[runner.task].final
            worst = max(worst, *(float((value - getattr(reference, key)).abs().max())
                                 for key, value in exported.items()))
    return worst


def measure(family: str, preset: str, task: str | None, size: int, exporter: str, *, dynamic: bool,
            threads: int, folder: Path, opset: int | None) -> dict:
    import torch

    import polymax
    from polymax.export.onnx import DEFAULT_OPSET, export_onnx

    torch.manual_seed(0)
    model = polymax.build_model(preset).eval()
    row = {"family": family, "preset": preset, "task": task or model.config.task().name, "exporter": exporter,
           "size": size, "dynamic": dynamic,
           "opset": opset or DEFAULT_OPSET[exporter]}
    path = folder / f"{preset}_{task}_{exporter}.onnx"
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        result = export_onnx(model, path, task=task, dynamic=dynamic, exporter=exporter, opset=opset,
                             **({} if dynamic else {"height": size, "width": size}))
    except Exception as error:  # the point is to report the failure
        row.update(ok=False, error=f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}",
                   export_s=round(time.perf_counter() - wall, 1))
        return row
    row.update(ok=True, export_s=round(time.perf_counter() - wall, 1), export_cpu_s=round(time.process_time() - cpu, 1),
               megabytes=round(path.stat().st_size / 2**20, 2))
    shapes = [(1, 3, size, size)] + ([(2, 3, size + 32, size - 32 if size > 33 else size)] if dynamic else [])
    try:
        row["max_abs_diff"] = difference(model, path, task, result.tasks, shapes, threads)
    except Exception as error:
        row.update(ok=False, error=f"onnxruntime: {type(error).__name__}: {str(error).strip().splitlines()[0][:200]}")
    return row


def main() -> int:
    args = parse()
    import torch

    torch.set_num_threads(args.threads)
    cases = FAMILIES + ([R50] if args.r50 else [])
    if args.only:
        cases = [case for case in cases if case[1] in args.only]
    rows = []
    print(f"torch {torch.__version__}, {args.threads} thread(s), {'dynamic' if args.dynamic else 'static'} graphs",
          flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for family, preset, task, size in cases:
            for exporter in args.exporters:
                row = measure(family, preset, task, size, exporter, dynamic=args.dynamic, threads=args.threads,
                              folder=Path(folder), opset=args.opset)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| family | preset | exporter (opset) | export s (CPU s) | ok | max abs Δ vs PyTorch |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        outcome = "yes" if row["ok"] else f"no: {row.get('error', '')}"
        diff = f"{row['max_abs_diff']:.1e}" if "max_abs_diff" in row else "–"
        print(f"| {row['family']} | `{row['preset']}` | {row['exporter']} ({row['opset']}) | {row['export_s']} "
              f"({row.get('export_cpu_s', '–')}) | {outcome} | {diff} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
