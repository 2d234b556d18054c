"""What a run tells its user: a tqdm progress bar (loss, lr, it/s, ETA) and scalar logs.

Scalars always go to ``OUT/scalars.jsonl`` (one JSON object per logged step; no dependency), and to
TensorBoard under ``OUT/tb`` when the optional ``log`` extra (tensorboard) is installed. Without it the run
says so once and carries on. What the run prints (config, resumes, evaluations, losses every ``log_every``
steps, stops) also goes, time-stamped, through Python ``logging`` (logger ``polymax.train``) to ``OUT/log.txt``,
appended across resumes, so a cluster job's history survives its console.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

LOG_FILE = "log.txt"
logger = logging.getLogger("polymax.train")


@contextmanager
def run_log(out_dir: str | Path, *, enabled: bool) -> Iterator[None]:
    """Send ``logger`` (INFO and above) to ``out_dir/log.txt`` while the block runs (rank 0 only: ``enabled``)."""
    if not enabled:
        yield
        return
    handler = logging.FileHandler(Path(out_dir) / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


def progress_bar(*, total: int, initial: int, enabled: bool) -> tqdm:
    """Steps as the unit, so tqdm's rate and ETA are it/s and time to the last step."""
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                file=sys.stderr, desc="train")


class ScalarLog:
    """Append-only scalar log; a no-op on ranks other than 0 (``enabled=False``)."""

    def __init__(self, out_dir: str | Path, *, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self._writer = None
        self._jsonl = None
        if not enabled:
            return
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (out_dir / "scalars.jsonl").open("a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("tensorboard is not installed (pip install 'polymax[log]'); scalars go to "
                      f"{out_dir / 'scalars.jsonl'} only", file=sys.stderr)
            else:
                self._writer = SummaryWriter(log_dir=str(out_dir / "tb"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        finite = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self._jsonl.write(json.dumps({"step": step, **finite}) + "\n")
        self._jsonl.flush()
        if self._writer is not None:
            for name, value in finite.items():
                self._writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._writer is not None:
            self._writer.close()
