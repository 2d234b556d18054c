"""``polymax eval --per-class``: the per-class tables (PQ / SQ / RQ, IoU, AP) as text and as JSON.

The tables come from the tasks' metrics (:class:`~polymax.metrics.class_table.ClassTable`); this module only
lays them out: percentages with two decimals in the text (``n/a`` where a class has nothing to measure), the
fractions themselves in the JSON (null for n/a).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from polymax.errors import UserError
from polymax.metrics.class_table import COUNTS, ClassTable

TITLES = {"pq": "PQ", "sq": "SQ", "rq": "RQ", "tp": "TP", "fp": "FP", "fn": "FN", "iou": "IoU", "ap": "AP",
          "ap50": "AP50", "ap75": "AP75"}


def format_class_table(table: ClassTable) -> str:
    """One line per class: its index, name, thing / stuff (when known) and every column."""
    width = max([len(name) for name in table.names] + [5])
    kind = "kind   " if table.things else ""
    lines = [f"{table.task} per class:",
             f"{'class':>5}  {'name':<{width}}  {kind}" + "".join(f"{TITLES.get(c, c):>8}" for c in table.columns)]
    for row in table.rows():
        cells = "".join(f"{_cell(row[column], column):>8}" for column in table.columns)
        thing = ("thing  " if row["isthing"] else "stuff  ") if table.things else ""
        lines.append(f"{row['class']:>5}  {row['name']:<{width}}  {thing}{cells}")
    return "\n".join(lines)


def _cell(value: float | int | None, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return str(int(value)) if column in COUNTS else f"{100 * value:.2f}"


def tables_json(tables: dict[str, ClassTable]) -> dict[str, list[dict]]:
    """task → the rows of its table (fractions; null where a class has nothing to measure)."""
    return {task: table.rows() for task, table in tables.items()}


def write_report(path: str | Path, summary: dict[str, float], tables: dict[str, ClassTable]) -> Path:
    """``{"summary": {...}, "per_class": {task: [rows]}}`` to ``path`` (NaN written as null)."""
    path = Path(path)
    content = {"summary": {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in summary.items()},
               "per_class": tables_json(tables)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n")
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from error
    return path
