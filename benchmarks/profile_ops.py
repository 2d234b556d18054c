"""Where the time of one inference goes: operators by self time, and the model's top-level parts.

    python benchmarks/profile_ops.py --preset kmax_r50_coco --size 641 [--fold | --fuse] [--channels-last] [--threads 1]

Prints (1) wall time per submodule two levels deep (forward hooks, one run) and (2) torch.profiler's
operator table sorted by self CPU time, optionally grouped by input shape (``--shapes``). Used to decide what
to optimise (docs/benchmarks.md, "Profile"); it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile


def part_times(model: torch.nn.Module, images: torch.Tensor, depth: int) -> dict[str, float]:
    """Seconds spent in each named submodule at most ``depth`` dots deep (nested parts overlap), running every
    task of the model."""
    times: dict[str, float] = {}
    starts: dict[str, float] = {}
    handles = []
    for name, module in model.named_modules():
        if not name or name.count(".") >= depth:
            continue

        def before(_module, _inputs, name=name) -> None:
            starts[name] = time.perf_counter()

        def after(_module, _inputs, _output, name=name) -> None:
            times[name] = times.get(name, 0.0) + time.perf_counter() - starts[name]

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        model(images, task=model.config.task_names)
    finally:
        for handle in handles:
            handle.remove()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="kmax_r50_coco")
    parser.add_argument("--size", type=int, nargs="+", default=[641])
    parser.add_argument("--fold", action="store_true")
    parser.add_argument("--fuse", action="store_true", help="fold, then fuse activations into the convolutions")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--depth", type=int, default=2, help="submodule depth for the part times")
    parser.add_argument("--shapes", action="store_true", help="group the operator table by input shapes")
    args = parser.parse_args()
    from polymax.runtime import keep_freed_memory

    keep_freed_memory()             # as the polymax command does (polymax/runtime.py)

    from polymax.tools.bench import BenchSettings, build_for_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    size = (args.size[0], args.size[-1])
    settings = BenchSettings(preset=args.preset, size=size, fold=args.fold, fuse=args.fuse,
                             channels_last=args.channels_last)
    model, _ = build_for_bench(settings, torch.device("cpu"))
    images = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 255
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    tasks = model.config.task_names                        # every task of the model, on one trunk pass
    with torch.inference_mode():
        model(images, task=tasks)                          # warm-up
        start = time.perf_counter()
        model(images, task=tasks)
        total = time.perf_counter() - start
        parts = part_times(model, images, args.depth)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
            model(images, task=tasks)
    print(f"{args.preset} {size[0]}×{size[1]}  fold={args.fold} fuse={args.fuse} channels_last={args.channels_last} "
          f"threads={torch.get_num_threads()}: one run {1000 * total:.0f} ms")
    for name, seconds in parts.items():
        if seconds >= 0.01 * total:
            print(f"  {name:<48s} {1000 * seconds:8.1f} ms")
    table = prof.key_averages(group_by_input_shape=args.shapes)
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=36,
                      max_shapes_column_width=90))


if __name__ == "__main__":
    main()
