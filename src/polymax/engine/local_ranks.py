"""Data-parallel training on this machine's CPU cores without ``torchrun``: :func:`run_local_ranks` starts
``world_size`` processes, sets in each the variables torchrun would set (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), so that :func:`polymax.engine.distributed.setup` joins them over gloo, and waits.

Why: a small model's training step on a CPU is mostly many small operations, which one process runs on one
core. Two processes of half the batch each use both cores of a 2-core machine (``polymax demo --quick``: 12
images per step instead of one process's 8 for 7-11 % more time, docs/multitask.md).

Signals: the ranks run in a process group of their own, so a Ctrl-C in the terminal reaches this process only.
The first SIGINT / SIGTERM it receives goes to rank 0, and the ranks agree to stop after the step and save
(:class:`polymax.engine.train.StopRequest`, :func:`polymax.engine.distributed.mean_and_any`); a later one goes
to every rank and aborts them.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp

from polymax.errors import UserError


class RankFailed(RuntimeError):
    """A rank ended without a result (a crash, or killed)."""


def run_local_ranks(world_size: int, target: Callable[..., Any], *args: Any, threads: int = 1) -> list[Any]:
    """``target(*args)`` in ``world_size`` fresh processes (``threads`` torch CPU threads each, at most
    :func:`rank_threads` allows); returns the ranks' return values (picklable), rank 0 first. A rank's UserError is
    raised here with its own message; a second Ctrl-C (the ranks abort) as KeyboardInterrupt."""
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    threads = rank_threads(world_size, threads)
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    port = _free_port()
    deterministic = torch.are_deterministic_algorithms_enabled()
    ranks = [context.Process(target=_rank_main, daemon=False,
                             args=(rank, world_size, port, threads, deterministic, target, args, results))
             for rank in range(world_size)]
    received: list[int] = []

    def pass_on(signum: int, _frame) -> None:
        # The first signal to rank 0 alone: the ranks agree on a stop request each step, and one message is
        # printed. Any later one to every rank, which aborts them.
        received.append(signum)
        for process in ranks[:1] if len(received) == 1 else ranks:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signum)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, pass_on)
    try:
        for process in ranks:
            process.start()
        for process in ranks:
            process.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    answers: dict[int, tuple[str, Any]] = {}
    while not results.empty():
        rank, kind, value = results.get()
        answers[rank] = (kind, value)
    if len(received) > 1:
        raise KeyboardInterrupt    # the ranks were told to abort
    # A user's mistake first: the other ranks then fail only because that rank left their process group.
    for kind, value in answers.values():
        if kind == "user_error":
            raise UserError(value)
    for rank in range(world_size):
        kind, value = answers.get(rank, ("crashed", f"exit code {ranks[rank].exitcode}"))
        if kind != "result":
            if kind == "error":
                print(f"training process {rank}:\n{value}", file=sys.stderr, end="")
                value = value.strip().splitlines()[-1]
            raise RankFailed(f"training process {rank} of {world_size} ended without a result ({value})")
    return [answers[rank][1] for rank in range(world_size)]


def rank_threads(world_size: int, threads: int) -> int:
    """``threads`` per rank, cut so that the ranks' threads together do not outnumber the cores this process may
    use (at least one each). Why: OpenMP threads beyond the cores wait on each other; two ranks of two threads on
    two cores trained the quick demo's model 17-19× slower than two ranks of one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(threads, cores // world_size))


def _rank_main(rank: int, world_size: int, port: int, threads: int, deterministic: bool, target: Callable[..., Any],
               args: tuple, results) -> None:
    os.setpgrp()       # out of the terminal's process group: signals come from the launcher, once each
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        value = target(*args)
    except UserError as error:
        results.put((rank, "user_error", str(error)))
        return
    except KeyboardInterrupt:      # a second Ctrl-C: abort, as a single process would
        results.put((rank, "aborted", None))
        return
    except BaseException:          # the launcher prints it, unless another rank's UserError explains it
        results.put((rank, "error", traceback.format_exc()))
        return
    results.put((rank, "result", value))


def _free_port() -> int:
    """A TCP port nobody listens on now (the ranks bind it a moment later; a collision is unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
