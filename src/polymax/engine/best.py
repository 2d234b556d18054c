"""Keep the best checkpoint by one evaluation metric (``TrainConfig.keep_best``), beside ``last``.

After each evaluation, when the metric beats the best value so far, the run writes ``OUT/best/`` exactly as it
writes ``OUT/last/`` (:func:`polymax.engine.checkpoint.save_checkpoint`: atomic, loadable with
``polymax.load_model``) and then ``OUT/best.json`` = ``{"metric", "mode", "value", "step"}`` (replaced
atomically too). ``--resume`` reads ``best.json`` back, so a resumed run only replaces ``best`` with a better
model. Ties keep the earlier checkpoint; a NaN value (no valid pixel, no segment) never counts as better.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from polymax.config.train import best_mode
from polymax.engine.checkpoint import BEST
from polymax.errors import UserError
from polymax.io.pretrained import atomic_write

__all__ = ["BEST", "BEST_FILE", "BestCheckpoint", "BestRecord", "check_metric", "read_best"]

BEST_FILE = "best.json"


@dataclass
class BestRecord:
    """The best evaluation so far: metric name, 'min' / 'max', its value and the optimiser step it was taken at."""

    metric: str
    mode: str
    value: float
    step: int


def check_metric(metric: str, available: Iterable[str]) -> None:
    """One line naming the metrics the evaluation reports when ``metric`` is not among them."""
    names = list(available)
    if metric not in names:
        raise UserError(f"keep_best: the evaluation reports no metric {metric!r}; it reports "
                        f"{', '.join(names) or 'none'} (set keep_best to one of them)")


def read_best(out_dir: str | os.PathLike) -> BestRecord | None:
    """``OUT/best.json``, or None when the run has none (or it is unreadable: the next evaluation rewrites it)."""
    try:
        data = json.loads((Path(out_dir) / BEST_FILE).read_text())
        return BestRecord(metric=str(data["metric"]), mode=str(data["mode"]), value=float(data["value"]),
                          step=int(data["step"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class BestCheckpoint:
    """Decides whether an evaluation is the best so far (rank 0, which holds the metrics) and records it.

    ``resume``: start from ``OUT/best.json`` when it names the same metric and mode; a fresh run (or another
    metric) starts with no best, so its first evaluation replaces whatever ``OUT/best`` held."""

    def __init__(self, out_dir: str | os.PathLike, *, metric: str, mode: str, resume: bool) -> None:
        self.out_dir = Path(out_dir)
        self.metric, self.mode = metric, best_mode(metric, mode)
        previous = read_best(self.out_dir) if resume else None
        same = previous is not None and (previous.metric, previous.mode) == (self.metric, self.mode)
        self.record: BestRecord | None = previous if same else None
        self.candidate: float | None = None

    def improved(self, metrics: dict[str, float]) -> bool:
        """Whether ``metrics`` (one evaluation) beat the best so far; remembers the value for :meth:`saved`."""
        check_metric(self.metric, metrics)
        value = float(metrics[self.metric])
        self.candidate = value
        if not math.isfinite(value):
            return False
        if self.record is None:
            return True
        return value < self.record.value if self.mode == "min" else value > self.record.value

    def saved(self, step: int) -> BestRecord:
        """``OUT/best`` now holds the checkpoint of ``step``: write ``best.json`` (temporary file, then rename)."""
        if self.candidate is None:
            raise RuntimeError("BestCheckpoint.saved() before improved()")
        self.record = BestRecord(metric=self.metric, mode=self.mode, value=self.candidate, step=step)
        text = json.dumps(asdict(self.record), indent=2) + "\n"
        atomic_write(self.out_dir / BEST_FILE, lambda path: path.write_text(text))
        return self.record
