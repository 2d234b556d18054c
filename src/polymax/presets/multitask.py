"""One model for every dense task (``docs/multitask.md``): one kMaX trunk answers panoptic, semantic, instance,
depth and surface normals depending on the task asked for.

Two ways to condition the cluster centres on the task, both expressible in a ModelConfig and measured side by
side in ``docs/multitask.md``:

* **groups** (the presets): each PolyMaX task owns the query group of the size PolyMaX gives it — K = C for
  semantic (fixed matching, query i ↔ class i), 16 depth bins, 8 normal clusters — and panoptic and instance
  share OneFormer's task-guided group (N − 1 queries read from the stride-4 features under the task's prompt,
  plus the task token). One kMaX decoder (its layers and projections) serves every group.
* **tokens**: one shared group of N task-guided centres for all five tasks (OneFormer's task token extended to
  'depth' and 'normals'; semantic then uses OneFormer's class head and Hungarian matching).

``polymax_multitask_tiny_synth`` trains on the built-in synthetic rooms (all five tasks);
``polymax_multitask_{r50,convnext_large}_nyu`` are the full-size NYUD-v2 models (semantic + depth + normals, the
labels NYUD-v2 has), their groups the PolyMaX presets' sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from polymax.config.model import ModelConfig, TaskConfig
from polymax.presets.kmax import polymax_tiny_synth_panoptic, synth_kmax_decoder
from polymax.presets.polymax import CLUSTERS, polymax, polymax_tiny_synth

SYNTH_TASKS = ("panoptic", "semantic", "instance", "depth", "normals")
NYU_TASKS = ("semantic", "depth", "normals")
# The shared task-guided group of panoptic and instance on the synthetic rooms (a few rooms' worth of objects).
SYNTH_SHARED_QUERIES = 16


def _grouped(task: TaskConfig, num_classes: int) -> TaskConfig:
    """``task`` with a query group of its own, of the size its PolyMaX preset uses (K = C for semantic)."""
    return replace(task, num_queries=CLUSTERS.get(task.name, num_classes))


def polymax_multitask_tiny_synth(conditioning: str = "groups") -> ModelConfig:
    """All five tasks from one tiny synthetic-room trunk; ``conditioning`` 'groups' (the preset) or 'tokens'."""
    depth = polymax_tiny_synth("depth")
    normals = polymax_tiny_synth("normals")
    semantic = polymax_tiny_synth("semantic")
    segmentation = tuple(TaskConfig(name=name, aux_semantic="decoder") for name in ("panoptic", "instance"))
    classes = depth.dataset.num_classes
    continuous = (semantic.tasks[0], depth.tasks[0], normals.tasks[0])
    if conditioning == "groups":
        tasks = (*segmentation, *(_grouped(task, classes) for task in continuous))
        suffix = ""
    elif conditioning == "tokens":
        tasks = (*segmentation, *continuous)
        suffix = "_tokens"
    else:
        raise ValueError(f"conditioning must be 'groups' or 'tokens', got {conditioning!r}")
    order = {name: i for i, name in enumerate(SYNTH_TASKS)}
    # The panoptic preset's post-processing: area limits scaled to the small rooms (COCO's would drop everything).
    return replace(depth, preset=f"polymax_multitask_tiny_synth{suffix}",
                   postprocess=polymax_tiny_synth_panoptic().postprocess,
                   kmax_decoder=replace(synth_kmax_decoder(SYNTH_SHARED_QUERIES), task_queries="oneformer"),
                   tasks=tuple(sorted(tasks, key=lambda task: order[task.name])))


def polymax_multitask_nyu(short_backbone: str) -> ModelConfig:
    """Semantic (K = 40), depth (16 bins) and normals (8 clusters) of NYUD-v2 from one full-size trunk."""
    configs = [polymax(short_backbone, "nyu", kind) for kind in NYU_TASKS]
    classes = configs[0].dataset.num_classes
    tasks = tuple(_grouped(config.tasks[0], classes) for config in configs)
    base = configs[0]
    # Every task owns its group: no shared group (num_queries 0), so no unused parameters under DDP.
    return replace(base, preset=f"polymax_multitask_{short_backbone}_nyu",
                   kmax_decoder=replace(base.kmax_decoder, num_queries=0), tasks=tasks)


MULTITASK_PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "polymax_multitask_tiny_synth": polymax_multitask_tiny_synth,
    "polymax_multitask_tiny_synth_tokens": partial(polymax_multitask_tiny_synth, "tokens"),
    **{f"polymax_multitask_{short}_nyu": partial(polymax_multitask_nyu, short) for short in ("r50", "convnext_large")},
}
