"""OneFormer on the kMaX trunk: one model, trained once on panoptic annotations, answers panoptic, semantic and
instance segmentation depending on a task token (``docs/oneformer.md``).

Each preset is its kMaX-DeepLab twin (``polymax.presets.kmax``) with the shared query group read by all three
tasks, its initial centres task-guided (``kmax_decoder.task_queries='oneformer'``) and N queries as OneFormer
uses them: 150 with ResNet-50 and on COCO, 250 with ConvNeXt-L on ADE20K and Cityscapes (hidden 256).
``oneformer_kmax_tiny_synth`` is the CPU-sized model of the synthetic rooms (24 queries).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from polymax.config.model import ModelConfig, TaskConfig
from polymax.presets.kmax import _SHORT, kmax, polymax_tiny_synth_panoptic, synth_kmax_decoder

ONEFORMER_TASKS = ("panoptic", "semantic", "instance")


def oneformer_tasks(aux_semantic: str) -> tuple[TaskConfig, ...]:
    return tuple(TaskConfig(name=name, aux_semantic=aux_semantic) for name in ONEFORMER_TASKS)


def oneformer_kmax(backbone: str, dataset: str, *, crop_size: tuple[int, int] | None = None) -> ModelConfig:
    """The kMaX-DeepLab preset of ``backbone`` on ``dataset`` as a OneFormer model."""
    base = kmax(backbone, dataset, crop_size=crop_size)
    queries = 250 if backbone == "convnext_large" and dataset in ("ade20k", "cityscapes") else 150
    return replace(base, preset=f"oneformer_kmax_{_SHORT[backbone]}_{dataset}",
                   kmax_decoder=replace(base.kmax_decoder, num_queries=queries, task_queries="oneformer"),
                   tasks=oneformer_tasks(base.tasks[0].aux_semantic))


def oneformer_kmax_tiny_synth() -> ModelConfig:
    """The tiny synthetic-room trunk of ``polymax_tiny_synth_panoptic`` as a OneFormer model (24 queries)."""
    base = polymax_tiny_synth_panoptic()
    return replace(base, preset="oneformer_kmax_tiny_synth",
                   kmax_decoder=replace(synth_kmax_decoder(24), task_queries="oneformer"),
                   tasks=oneformer_tasks("decoder"))


ONEFORMER_PRESETS: dict[str, Callable[[], ModelConfig]] = {
    **{f"oneformer_kmax_{_SHORT[backbone]}_{dataset}": partial(oneformer_kmax, backbone, dataset)
       for backbone in ("resnet50", "convnext_large") for dataset in ("coco", "cityscapes", "ade20k")},
    "oneformer_kmax_tiny_synth": oneformer_kmax_tiny_synth,
}
