"""Named PolyMaX configurations: one flat table ``POLYMAX_PRESETS`` of name → plain function returning a ModelConfig.

``polymax_{r50,convnext_tiny,convnext_small,convnext_base,convnext_large}_{nyu,taskonomy}_{semantic,depth,normals}``:
the kMaX-DeepLab trunk (os4 pixel decoder, six kMaX layers, COCO drop-path settings — the paper's training
"closely follows kMaX-DeepLab") with a PolyMaX task head:

| task     | clusters K                 | head / range                       | aux semantic branch |
|----------|----------------------------|------------------------------------|---------------------|
| semantic | C (NYU 40, Taskonomy 17)   | kMaX class head, fixed matching    | decoder (kMaX's)    |
| depth    | 16 (paper App. B best)     | bins in [1e-3, 10] m NYU, [1e-3, 128] m Taskonomy | none  |
| normals  | 8 (paper App. B best)      | unit 3-vectors                     | none                |

Taskonomy semantic uses the release's labels as our loader decodes them (background + 16 COCO objects; the
paper's re-generated pseudo-labels are not public). Crop sizes: NYU depth 417×545 (the BTS / AdaBins 416×544
crop, as 32k+1), NYU semantic / normals the full 481×641 frame, Taskonomy 513×513.

``polymax_tiny_synth_{semantic,depth,normals}``: the small trunk of ``polymax_tiny_synth_panoptic`` on the
built-in synthetic rooms (6 classes; depth in [SYNTH_MIN_DEPTH, SYNTH_MAX_DEPTH]); they train on a CPU.

``polymax_tiny_synth_semantic_depth``: semantic segmentation and depth from one tiny trunk (two task heads).

``deeplabv3plus_<same suffixes>``: the per-pixel DeepLabv3+ baseline with the same backbone, data set and
task (``architecture='deeplabv3plus'``); equivalently ``build_model(name, architecture="deeplabv3plus")``.

The kMaX helpers (decoder layout, drop-path table, the small synthetic trunk) come from ``polymax.presets.kmax``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from polymax.config.model import BackboneConfig, HeadConfig, KMaXDecoderConfig, ModelConfig, TaskConfig
from polymax.presets.kmax import (
    BACKBONE_KEEP,
    OS4_DECODER,
    SYNTH_BACKBONE,
    SYNTH_CROP,
    SYNTH_HEAD,
    SYNTH_PIXEL_DECODER,
    synth_kmax_decoder,
)

BACKBONES = {"r50": "resnet50", "convnext_tiny": "convnext_tiny", "convnext_small": "convnext_small",
             "convnext_base": "convnext_base", "convnext_large": "convnext_large"}
DATASETS = {"nyu": "nyuv2", "taskonomy": "taskonomy"}
TASKS = ("semantic", "depth", "normals")

# Clusters per task (appendix B: 16 bins for depth and 8 sphere segments for normals were best).
DEPTH_CLUSTERS = 16
NORMAL_CLUSTERS = 8
# Depth ranges in metres: NYUD-v2's evaluation range; Taskonomy's 16-bit depth at 1/512 m ("maximum depth 128m").
DEPTH_RANGE = {"nyu": (1e-3, 10.0), "taskonomy": (1e-3, 128.0)}
CROP_SIZE = {("nyu", "semantic"): (481, 641), ("nyu", "depth"): (417, 545), ("nyu", "normals"): (481, 641),
             ("taskonomy", "semantic"): (513, 513), ("taskonomy", "depth"): (513, 513),
             ("taskonomy", "normals"): (513, 513)}


# Per-task settings as data: the auxiliary semantic branch only where there are semantic labels to train it.
AUX_SEMANTIC = {"semantic": "decoder", "depth": "none", "normals": "none"}
CLUSTERS = {"depth": DEPTH_CLUSTERS, "normals": NORMAL_CLUSTERS}       # semantic: K = C
# The data sets' recipes: Taskonomy depth trains with the Charbonnier loss, NYUD-v2 depth is evaluated on
# Eigen's crop (read by the depth task only).
DEPTH_LOSS = {"nyu": "silog", "taskonomy": "charbonnier", "synth": "silog"}
DEPTH_EVAL_CROP = {"nyu": "nyu"}


def _task(kind: str, dataset: str, *, num_classes: int, depth_range: tuple[float, float]) -> tuple[TaskConfig, int]:
    """The TaskConfig and the number of queries K of a PolyMaX task on ``dataset`` (nyu, taskonomy or synth)."""
    if kind not in AUX_SEMANTIC:
        raise ValueError(f"unknown PolyMaX task {kind!r}; use one of {TASKS}")
    low, high = depth_range
    task = TaskConfig(name=kind, aux_semantic=AUX_SEMANTIC[kind], min_depth=low, max_depth=high,
                      depth_loss=DEPTH_LOSS[dataset], depth_eval_crop=DEPTH_EVAL_CROP.get(dataset))
    return task, CLUSTERS.get(kind, num_classes)


def polymax(short_backbone: str, dataset: str, kind: str) -> ModelConfig:
    """A full-size PolyMaX model: ``short_backbone`` in BACKBONES, ``dataset`` nyu | taskonomy, ``kind`` in TASKS."""
    from polymax.data import dataset_info

    backbone = BACKBONES[short_backbone]
    info = dataset_info(DATASETS[dataset])
    task, queries = _task(kind, dataset, num_classes=info.num_classes, depth_range=DEPTH_RANGE[dataset])
    return ModelConfig(
        preset=f"polymax_{short_backbone}_{dataset}_{kind}",
        backbone=BackboneConfig(name=backbone, drop_path_keep=BACKBONE_KEEP[backbone]["coco"]),
        pixel_decoder=OS4_DECODER,
        kmax_decoder=KMaXDecoderConfig(num_queries=queries, drop_path_keep=0.8),
        head=HeadConfig(),
        dataset=info,
        tasks=(task,),
        high_res_stride=4,
        crop_size=CROP_SIZE[(dataset, kind)],
    )


def polymax_tiny_synth(kind: str) -> ModelConfig:
    """The CPU-sized synthetic-room model of ``polymax_tiny_synth_panoptic`` with a PolyMaX task head."""
    from polymax.data.synthetic import SYNTH_INFO, SYNTH_MAX_DEPTH, SYNTH_MIN_DEPTH

    task, queries = _task(kind, "synth", num_classes=SYNTH_INFO.num_classes,
                          depth_range=(SYNTH_MIN_DEPTH, SYNTH_MAX_DEPTH))
    return ModelConfig(
        preset=f"polymax_tiny_synth_{kind}",
        backbone=SYNTH_BACKBONE,
        pixel_decoder=SYNTH_PIXEL_DECODER,
        kmax_decoder=synth_kmax_decoder(queries),
        head=SYNTH_HEAD,
        dataset=SYNTH_INFO,
        tasks=(task,),
        crop_size=SYNTH_CROP,
    )


def polymax_tiny_synth_semantic_depth() -> ModelConfig:
    """Two tasks on one tiny synthetic-room trunk: semantic (K = C on the shared group) and depth (16 bins, a query
    group of its own). Trained on the sum of both tasks' losses; ``--task`` picks one at inference."""
    config = polymax_tiny_synth("semantic")
    depth, queries = _task("depth", "synth", num_classes=config.dataset.num_classes,
                           depth_range=(config.tasks[0].min_depth, config.tasks[0].max_depth))
    return replace(config, preset="polymax_tiny_synth_semantic_depth",
                   tasks=(*config.tasks, replace(depth, num_queries=queries)))


def deeplabv3plus(make: Callable[[], ModelConfig], name: str) -> ModelConfig:
    """The per-pixel baseline of a PolyMaX preset: same backbone, data set, task and crop; no kMaX parts used;
    depth trains with the Charbonnier loss, as in the paper's baseline.

    The decoder width is ``head.pixel_head_channels`` (256 in the full-size presets)."""
    config = make()
    tasks = tuple(replace(task, aux_semantic="none", depth_loss="charbonnier") for task in config.tasks)
    # The paper's DeepLabv3+: output stride 16 on ResNets (atrous stage5); ConvNeXt has no atrous form here.
    stride = 16 if config.backbone.name.startswith("resnet") else 32
    return replace(config, preset=name, architecture="deeplabv3plus", tasks=tasks, baseline_output_stride=stride)


def _table() -> dict[str, Callable[[], ModelConfig]]:
    table: dict[str, Callable[[], ModelConfig]] = {}
    for short in BACKBONES:
        for dataset in DATASETS:
            for kind in TASKS:
                table[f"polymax_{short}_{dataset}_{kind}"] = partial(polymax, short, dataset, kind)
    for kind in TASKS:
        table[f"polymax_tiny_synth_{kind}"] = partial(polymax_tiny_synth, kind)
    for name, make in list(table.items()):
        baseline = "deeplabv3plus_" + name.removeprefix("polymax_")
        table[baseline] = partial(deeplabv3plus, make, baseline)
    table["polymax_tiny_synth_semantic_depth"] = polymax_tiny_synth_semantic_depth
    return table


POLYMAX_PRESETS: dict[str, Callable[[], ModelConfig]] = _table()
