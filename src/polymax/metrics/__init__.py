"""Streaming evaluation metrics: ``update(pred, target)`` per batch, ``compute() -> dict[str, float]``, ``reset()``.

Conventions: ``DESIGN.md`` §6 and ``reference/depth_normals_conventions.md`` §1–§3; each module's docstring
gives its exact formulas. ``InstanceMetrics`` needs the optional ``coco`` extra (pycocotools).
"""

from polymax.metrics.depth import DepthMetrics
from polymax.metrics.instance import InstanceMetrics, instances_from_panoptic
from polymax.metrics.normals import NormalMetrics
from polymax.metrics.panoptic import PanopticMetrics
from polymax.metrics.semantic import SemanticMetrics

__all__ = [
    "DepthMetrics",
    "InstanceMetrics",
    "NormalMetrics",
    "PanopticMetrics",
    "SemanticMetrics",
    "instances_from_panoptic",
]
