"""`polymax demo`: one PolyMaX model learns panoptic, semantic and instance segmentation, depth and surface
normals of the built-in synthetic rooms on a CPU, and shows what it learned (see :mod:`polymax.tools.demo`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polymax.errors import UserError

HELP = "train one small PolyMaX model for every dense task on synthetic rooms, compare it with trivial baselines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="the short version (about 2-3 min on a 2-core CPU; the default trains 4x longer)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out/)")
    parser.add_argument("--tasks", default="panoptic,semantic,instance,depth,normals",
                        help="the tasks the one model learns, a comma-separated subset of "
                             "panoptic,semantic,instance,depth,normals (default: all)")
    parser.add_argument("--compare", action="store_true",
                        help="also train one single-task model per task for as many steps and report it beside "
                             "the one model (takes about as long again per task)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply the training steps")
    parser.add_argument("--size", type=int, default=None, help="image size, 32k+1 (default 65)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the training runs")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of each training process (default 1: the demo's tiny tensors run faster "
                             "on one thread than on two; --quick trains as two processes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:

    from polymax.tools.demo import TASKS, DemoInterrupted, beats_trivial, run_demo, settings_for, summary_table

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    unknown = [t for t in tasks if t not in TASKS]
    if not tasks or unknown:
        raise UserError(f"unknown --tasks entry {', '.join(unknown) or '(empty)'}; choose from {', '.join(TASKS)}")
    settings = settings_for(quick=args.quick, steps_scale=args.steps_scale, size=args.size)
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)
    try:
        reports = run_demo(args.out, settings=settings, tasks=tasks, mode="quick" if args.quick else "full",
                           progress=not args.no_progress, seed=args.seed, compare=args.compare)
    except DemoInterrupted as stopped:
        print(f"polymax demo: {stopped}", file=sys.stderr)
        return 130
    print()
    print(summary_table(reports))
    print(f"\nwrote {args.out / 'metrics.json'}, pictures {args.out / 'demo.png'} and "
          f"{', '.join(str(r.picture) for r in reports)}, and the model {args.out / 'model'} (try: polymax predict "
          f"IMAGE --model {args.out / 'model'} --task all --out predictions)")
    if not all(beats_trivial(r) for r in reports):
        print("note: not every task beat its trivial baseline in this run (train longer: drop --quick)")
    return 0
