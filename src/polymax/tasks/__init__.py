"""Dense tasks as first-class values: one module per task, and the flat table ``TASKS`` of name → task.

Each entry implements :class:`polymax.tasks.base.Task` (label field, head, criterion, metrics, decoding to the
image's own size, pictures, files, flip rule, exported outputs). Nothing outside this package switches on a task
name; ``TASKS[name]`` is the one lookup.
"""

from __future__ import annotations

from polymax.errors import UserError
from polymax.tasks.base import Task
from polymax.tasks.depth import DepthTask
from polymax.tasks.depth_tokens import DepthTokensTask
from polymax.tasks.instance import InstanceTask
from polymax.tasks.instance_tokens import InstanceTokensTask
from polymax.tasks.normals import NormalsTask
from polymax.tasks.panoptic import PanopticTask
from polymax.tasks.semantic import SemanticTask

TASKS: dict[str, Task] = {
    "panoptic": PanopticTask(),
    "semantic": SemanticTask(),
    "instance": InstanceTask(),
    "depth": DepthTask(),
    "normals": NormalsTask(),
    "depth_tokens": DepthTokensTask(),
    "instance_tokens": InstanceTokensTask(),
}


def get_task(name: str) -> Task:
    """``TASKS[name]`` with a one-line error listing the known tasks."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; use one of {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "Task", "get_task"]
