"""How latency grows with input size, measured with alternating runs of one model at two sizes.

    python benchmarks/size_ratio.py --preset kmax_r50_coco --sizes 641 1281 --rounds 3 --threads 1

On a machine shared with other work, two separate runs can see very different load; alternating the two
sizes in one process exposes both to the same load, so the ratio of their latencies is meaningful. Prints
the latency ratio next to the pixel ratio and the counted-FLOPs ratio: a latency ratio at or below the pixel
ratio means the cost grows no faster than linearly with the number of pixels.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="kmax_r50_coco")
    parser.add_argument("--sizes", type=int, nargs=2, default=[641, 1281], metavar=("SMALL", "LARGE"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--plain", action="store_true", help="the model as built (default: --fuse --channels-last)")
    args = parser.parse_args()
    from polymax.runtime import keep_freed_memory

    keep_freed_memory()             # as the polymax command does (polymax/runtime.py)
    if args.threads:
        torch.set_num_threads(args.threads)

    from polymax.tools.analysis import count_flops
    from polymax.tools.bench import BenchSettings, build_for_bench, machine_description

    fast = not args.plain
    settings = BenchSettings(preset=args.preset, fold=fast, fuse=fast, channels_last=fast)
    model, _ = build_for_bench(settings, torch.device("cpu"))
    images, flops, latency = {}, {}, {}
    for size in args.sizes:
        batch = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255
        images[size] = batch.contiguous(memory_format=torch.channels_last) if fast else batch
        flops[size] = count_flops(model, (size, size))               # also a warm-up run
        latency[size] = []
    machine = machine_description(torch.device("cpu"))
    print(f"{args.preset} ({'fold + fuse + channels-last' if fast else 'as built'}) on {machine['cpu']}, "
          f"{machine['torch_threads']} thread(s)")
    with torch.inference_mode():
        for index in range(args.rounds):
            for size in args.sizes if index % 2 == 0 else reversed(args.sizes):
                start = time.perf_counter()
                model(images[size], task=model.config.task_names)      # every task, one trunk pass
                latency[size].append(time.perf_counter() - start)
                print(f"  round {index + 1}: {size}² {1000 * latency[size][-1]:8.0f} ms", flush=True)
    small, large = args.sizes
    ratio = statistics.median(latency[large]) / statistics.median(latency[small])
    best = min(latency[large]) / min(latency[small])
    print(f"pixels ×{(large / small) ** 2:.2f}, counted FLOPs ×{flops[large] / flops[small]:.2f}, "
          f"latency ×{ratio:.2f} (medians; minima ×{best:.2f})")


if __name__ == "__main__":
    main()
