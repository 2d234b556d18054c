"""Generation speed of the built-in synthetic scenes on one CPU core.

    OMP_NUM_THREADS=1 python benchmarks/synthetic_speed.py [--sizes 65 129 257] [--samples 200]

Prints milliseconds per sample and samples per second for square images of each size (full samples:
scene sampling, ray casting, shading, noise and conversion to a ``Sample`` of tensors), best of
``--repeats`` rounds so that other load on the machine disturbs the figure less.
"""

from __future__ import annotations

import argparse
import os
import time

# One core, as the data loader workers of the demo would use; set before numpy / torch start their pools.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from polymax.data.synthetic import SyntheticScenes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[65, 129, 257], help="square image sizes")
    parser.add_argument("--samples", type=int, default=200, help="samples timed per size and round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per size; the fastest is reported")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for size in args.sizes:
        dataset = SyntheticScenes(split="train", size=(size, size), num_samples=args.samples)
        dataset[0]  # warm-up (imports, first allocations)
        wall, cpu = [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            for index in range(len(dataset)):
                dataset[index]
            wall.append((time.perf_counter() - start) / len(dataset))
            cpu.append((time.process_time() - start_cpu) / len(dataset))
        seconds = min(wall)
        # CPU time of this process is a steadier figure than wall time when other jobs share the machine.
        print(f"{size}x{size}: {seconds * 1e3:6.2f} ms/sample, {1.0 / seconds:7.1f} samples/s "
              f"(process CPU time {min(cpu) * 1e3:.2f} ms/sample)")


if __name__ == "__main__":
    main()
