"""Seconds per batch of 8 images for one ``task="all"`` call against one call per task, on a randomly initialised
``polymax_multitask_tiny_synth`` model (panoptic, semantic, instance, depth, normals) on the CPU.

    python benchmarks/predict_all.py [--threads 1] [--rounds 5] [--sizes 65 257] [--batch 8]

Two paths, each timed as (a) one call for all the tasks and (b) one call per task, interleaved in every round so
that both see the same load on the machine (the median of ``--rounds`` is printed):

- predictor: ``Predictor.predict_batch(images, task="all")`` against ``predict_batch(images, task=t)`` for each
  task: end to end (preparation, network, decoding to the images' size; ``resize="none"``).
- network: ``TorchRunner.run_tasks(batch, tasks)`` against the runner of each task: the model call only.

(a) shares the backbone and pixel decoder across the tasks; (b) runs them once per task. The process CPU time is
printed beside the wall time: it is the steadier figure when other jobs share the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per case; the median is printed")
    parser.add_argument("--sizes", type=int, nargs="+", default=[65, 257], help="square image sizes (32k+1)")
    parser.add_argument("--batch", type=int, default=8, help="images per batch (default 8)")
    return parser.parse_args()


def each(calls: list[Callable[[], object]]) -> None:
    """(b): the calls one after the other."""
    for call in calls:
        call()


def main() -> None:
    args = parse()
    # Every thread pool sized before torch starts its own.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch

    from polymax.build import build_model
    from polymax.inference.predictor import Predictor
    from polymax.inference.runner import TorchRunner

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("polymax_multitask_tiny_synth").eval()
    tasks = model.tasks
    predictor = Predictor(model, task="all", batch_size=args.batch, resize="none")
    runner = predictor.runner
    assert isinstance(runner, TorchRunner)
    runners = {task: runner.for_task(task) for task in tasks}
    print(f"polymax_multitask_tiny_synth {tasks}, batch {args.batch}, {args.threads} thread(s), torch "
          f"{torch.__version__}, median of {args.rounds} rounds; seconds per batch (wall / process CPU)")
    print(f"{'size':>7} {'path':<9} {'(a) all in one call':>20} {'(b) one call per task':>22} {'b/a wall':>9} "
          f"{'b/a cpu':>8}")
    for size in args.sizes:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(args.batch)]
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
        cases = {
            "predictor": (partial(predictor.predict_batch, images, task="all"),
                          partial(each, [partial(predictor.predict_batch, images, task=task) for task in tasks])),
            "network": (partial(runner.run_tasks, batch, tasks),
                        partial(each, [partial(runners[task], batch) for task in tasks])),
        }
        for path, (together, apart) in cases.items():
            together(), apart()                                  # warm-up: first allocations, oneDNN primitives
            times: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
            for _ in range(args.rounds):
                for key, call in (("a", together), ("b", apart)):
                    wall, cpu = time.perf_counter(), time.process_time()
                    call()
                    times[key].append((time.perf_counter() - wall, time.process_time() - cpu))
            a_wall, a_cpu = (statistics.median(t[i] for t in times["a"]) for i in (0, 1))
            b_wall, b_cpu = (statistics.median(t[i] for t in times["b"]) for i in (0, 1))
            print(f"{size:>3}x{size:<3} {path:<9} {a_wall:9.3f} / {a_cpu:7.3f} {b_wall:11.3f} / {b_cpu:7.3f} "
                  f"{b_wall / a_wall:8.2f}x {b_cpu / a_cpu:7.2f}x")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
