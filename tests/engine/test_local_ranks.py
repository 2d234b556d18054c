"""run_local_ranks: ranks that torch.distributed can join without torchrun, their answers and errors brought back,
and a Ctrl-C to the launcher turned into one stop request that every rank honours together."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from polymax.engine.local_ranks import RankFailed, rank_threads, run_local_ranks
from polymax.errors import UserError


def _where_am_i() -> tuple[int, int, int, float]:
    """Each rank: its place, its threads, and the sum of the ranks through a gloo all-reduce."""
    from polymax.engine import distributed
    context = distributed.setup("cpu")
    try:
        total = torch.tensor(float(context.rank))
        torch.distributed.all_reduce(total)
        return context.rank, context.world_size, torch.get_num_threads(), float(total)
    finally:
        distributed.teardown(context)


def _refuse() -> None:
    raise UserError("bad file rooms/7.png: replace it")


def _refuse_on_rank_1() -> None:
    """Rank 1 refuses; rank 0 then loses its peer in the all-reduce, which must not hide rank 1's message."""
    from polymax.engine import distributed
    context = distributed.setup("cpu")
    if context.rank == 1:
        raise UserError("bad file rooms/7.png: replace it")
    time.sleep(0.5)
    torch.distributed.all_reduce(torch.zeros(3))


def _crash() -> None:
    os._exit(3)


def _train_until_stopped(flags: Path) -> int | None:
    """A training loop's skeleton: each step the ranks agree on the loss and on a stop request."""
    from polymax.engine import distributed
    from polymax.engine.train import StopRequest
    context = distributed.setup("cpu")
    try:
        with StopRequest() as stop:
            (flags / f"ready{context.rank}").touch()
            while True:
                _, stop_now = distributed.mean_and_any(context, torch.zeros(()), stop.signal is not None)
                if stop_now:
                    return stop.signal
                time.sleep(0.01)
    finally:
        distributed.teardown(context)


def test_two_ranks_join_one_process_group():
    assert run_local_ranks(2, _where_am_i, threads=1) == [(0, 2, 1, 1.0), (1, 2, 1, 1.0)]


def test_the_ranks_threads_never_outnumber_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    assert [rank_threads(2, threads) for threads in (1, 2, 3, 8)] == [1, 2, 2, 2]
    assert rank_threads(8, 4) == 1    # more ranks than cores: one thread each, never none
    assert rank_threads(1, 8) == 4
    monkeypatch.undo()
    threads = [answer[2] for answer in run_local_ranks(2, _where_am_i, threads=64)]
    assert threads == [rank_threads(2, 64)] * 2 and threads[0] < 64


def test_a_ranks_user_error_reaches_the_caller_and_a_crash_is_named():
    with pytest.raises(UserError, match="bad file rooms/7.png"):
        run_local_ranks(1, _refuse)
    with pytest.raises(UserError, match="bad file rooms/7.png"):
        run_local_ranks(2, _refuse_on_rank_1)
    with pytest.raises(RankFailed, match=r"process 0 of 1 ended without a result \(exit code 3\)"):
        run_local_ranks(1, _crash)


def test_ctrl_c_stops_every_rank_after_the_same_step(tmp_path):
    def press_ctrl_c() -> None:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready{rank}").exists() for rank in range(2)) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    answers = run_local_ranks(2, _train_until_stopped, tmp_path)
    presser.join()
    # Rank 0 got the signal, rank 1 stopped because rank 0 asked; the caller's own Ctrl-C handler is back.
    assert answers == [signal.SIGINT, None]
    assert signal.getsignal(signal.SIGINT) is handler
