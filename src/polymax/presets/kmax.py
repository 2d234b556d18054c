"""The kMaX-DeepLab presets: a flat table ``KMAX_PRESETS`` of name → plain function returning a ModelConfig.

The kMaX-DeepLab presets reproduce the official deeplab2 configs (spec §1 and §3, §5.2):

| data set   | queries | high-res stride            | decoder keep | aux semantic | post-processing          |
|------------|---------|----------------------------|--------------|--------------|--------------------------|
| COCO       | 128     | 4                          | 0.8          | decoder      | 0.7/0.5 0.8 400/6400     |
| Cityscapes | 256     | 2 (R50, MaX-S); 4 ConvNeXt | 0.8          | head (os32)  | 0.5/0.3 0.9 256/2048 (1,0) |
| ADE20K     | 128     | 4                          | 1.0          | decoder      | 0.4/0.4 0.8 0/0          |

(post-processing: thing/stuff class confidence, overlap, thing/stuff area limits, reorder weights if not (1,1)).

Cityscapes adds a fifth pixel-decoder stage (dims …, 32) that fuses with the backbone's stage1: stride 2
for ResNet / MaX-S, but stride 4 for ConvNeXt (its stem output), so the ConvNeXt models predict at os4.
Backbone drop-path keep probabilities follow the shipped configs (spec §1.1 table).

Adding a preset is one line in ``KMAX_PRESETS`` (plus, if new, a small function composing the dataclasses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from polymax.config.model import (
    BackboneConfig,
    DatasetInfo,
    HeadConfig,
    KMaXDecoderConfig,
    ModelConfig,
    PixelDecoderConfig,
    PostProcessConfig,
    TaskConfig,
)

OS4_DECODER = PixelDecoderConfig(dims=(512, 256, 128, 64), num_blocks=(1, 5, 1, 1),
                                 block_types=("axial", "axial", "bottleneck", "bottleneck"))
# Cityscapes: one more bottleneck stage, fused with the backbone's stage1.
OS2_DECODER = PixelDecoderConfig(dims=(512, 256, 128, 64, 32), num_blocks=(1, 5, 1, 1, 1),
                                 block_types=("axial", "axial", "bottleneck", "bottleneck", "bottleneck"))

POSTPROCESS = {
    "coco": PostProcessConfig(thing_confidence=0.7, stuff_confidence=0.5, overlap=0.8, reorder_class_weight=1.0,
                              reorder_mask_weight=1.0, pixel_confidence=0.4, thing_area_limit=400,
                              stuff_area_limit=6400),
    "cityscapes": PostProcessConfig(thing_confidence=0.5, stuff_confidence=0.3, overlap=0.9, reorder_class_weight=1.0,
                                    reorder_mask_weight=0.0, pixel_confidence=0.4, thing_area_limit=256,
                                    stuff_area_limit=2048),
    "ade20k": PostProcessConfig(thing_confidence=0.4, stuff_confidence=0.4, overlap=0.8, reorder_class_weight=1.0,
                                reorder_mask_weight=1.0, pixel_confidence=0.4, thing_area_limit=0, stuff_area_limit=0),
}

# Backbone drop-path keep probability per (backbone, data set), spec §1.1.
BACKBONE_KEEP = {
    "resnet50": {"coco": 1.0, "cityscapes": 1.0, "ade20k": 1.0},
    "axial_resnet50": {"coco": 0.8, "cityscapes": 0.8},
    "convnext_tiny": {"coco": 0.7, "cityscapes": 0.8},
    "convnext_small": {"coco": 0.6, "cityscapes": 0.7},
    "convnext_base": {"coco": 0.5, "cityscapes": 0.6},
    "convnext_large": {"coco": 0.4, "cityscapes": 0.4, "ade20k": 0.3},
}


def _dataset(name: str) -> DatasetInfo:
    from polymax.data import dataset_info  # lazy: listing presets does not load metadata
    return dataset_info(name)


def kmax(backbone: str, dataset: str, *, crop_size: tuple[int, int] | None = None) -> ModelConfig:
    """An official kMaX-DeepLab configuration: ``backbone`` in BACKBONE_KEEP, ``dataset`` coco | cityscapes | ade20k."""
    keep = BACKBONE_KEEP[backbone][dataset]
    cityscapes = dataset == "cityscapes"
    convnext = backbone.startswith("convnext")
    info = _dataset(f"{dataset}_panoptic")
    return ModelConfig(
        preset=f"kmax_{_SHORT[backbone]}_{dataset}",
        backbone=BackboneConfig(name=backbone, drop_path_keep=keep),
        pixel_decoder=OS2_DECODER if cityscapes else OS4_DECODER,
        kmax_decoder=KMaXDecoderConfig(num_queries=256 if cityscapes else 128,
                                       drop_path_keep=1.0 if dataset == "ade20k" else 0.8),
        head=HeadConfig(),
        dataset=info,
        postprocess=POSTPROCESS[dataset],
        tasks=(TaskConfig(name="panoptic", aux_semantic="head" if cityscapes else "decoder"),),
        high_res_stride=4 if (convnext or not cityscapes) else 2,
        crop_size=crop_size or {"coco": (1281, 1281), "cityscapes": (1025, 2049), "ade20k": (641, 641)}[dataset],
    )


_SHORT = {"resnet50": "r50", "axial_resnet50": "axial_r50", "convnext_tiny": "convnext_tiny",
          "convnext_small": "convnext_small", "convnext_base": "convnext_base", "convnext_large": "convnext_large"}


def kmax_tiny_test() -> ModelConfig:
    """A few-thousand-pixel, ~1M-parameter kMaX for unit tests (same structure, tiny widths)."""
    from polymax.data.synthetic import SYNTH_INFO
    return ModelConfig(
        preset="kmax_tiny_test",
        backbone=BackboneConfig(name="resnet_tiny", drop_path_keep=0.9, width=8),
        pixel_decoder=PixelDecoderConfig(dims=(32, 16, 8, 8), num_blocks=(1, 1, 1, 1), num_heads=2,
                                         block_types=("axial", "axial", "bottleneck", "bottleneck")),
        kmax_decoder=KMaXDecoderConfig(num_queries=8, num_layers=(1, 1, 1), hidden=32, num_heads=2, ffn=64,
                                       drop_path_keep=0.9),
        head=HeadConfig(pixel_head_channels=16, mask_dim=16),
        dataset=SYNTH_INFO,
        postprocess=POSTPROCESS["ade20k"],
        tasks=(TaskConfig(name="panoptic", aux_semantic="decoder"),),
        crop_size=(65, 65),
    )


# The trunk of every ``polymax_tiny_synth_*`` preset: three kMaX layers (one per stride) on a small
# ResNet and pixel decoder, sized so that the demo trains all four tasks on a 2-core CPU in minutes.
SYNTH_BACKBONE = BackboneConfig(name="resnet_tiny", drop_path_keep=1.0, width=16)
SYNTH_PIXEL_DECODER = PixelDecoderConfig(dims=(64, 32, 16, 8), num_blocks=(1, 1, 1, 1), num_heads=2,
                                         block_types=("axial", "axial", "bottleneck", "bottleneck"))
SYNTH_HEAD = HeadConfig(pixel_head_channels=32, mask_dim=32)
SYNTH_CROP = (65, 65)


def synth_kmax_decoder(num_queries: int) -> KMaXDecoderConfig:
    return KMaXDecoderConfig(num_queries=num_queries, num_layers=(1, 1, 1), hidden=64, num_heads=4, ffn=128,
                             drop_path_keep=1.0)


def polymax_tiny_synth_panoptic() -> ModelConfig:
    """kMaX panoptic segmentation on the built-in synthetic rooms (6 classes, 3 of them things); trains on a CPU."""
    from polymax.data.synthetic import SYNTH_INFO
    return ModelConfig(
        preset="polymax_tiny_synth_panoptic",
        backbone=SYNTH_BACKBONE,
        pixel_decoder=SYNTH_PIXEL_DECODER,
        kmax_decoder=synth_kmax_decoder(16),
        head=SYNTH_HEAD,
        dataset=SYNTH_INFO,
        # Small images: area limits scaled down from COCO's; class thresholds as ADE20K (no class prior yet). Pixel
        # confidence 0.2, not 0.4: after a few hundred CPU steps the masks are soft, and at 0.4 most thing pixels
        # fall below the threshold and turn void. Five 300-step joint models on the test split's rooms: PQ +0.03 to
        # +0.10 for four, −0.05 for one; at 1200 steps the two agree (docs/multitask.md).
        postprocess=replace(POSTPROCESS["ade20k"], pixel_confidence=0.2, thing_area_limit=16, stuff_area_limit=64),
        tasks=(TaskConfig(name="panoptic", aux_semantic="decoder"),),
        crop_size=SYNTH_CROP,
    )


KMAX_PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "kmax_r50_coco": partial(kmax, "resnet50", "coco"),
    "kmax_axial_r50_coco": partial(kmax, "axial_resnet50", "coco"),
    "kmax_convnext_tiny_coco": partial(kmax, "convnext_tiny", "coco"),
    "kmax_convnext_small_coco": partial(kmax, "convnext_small", "coco"),
    "kmax_convnext_base_coco": partial(kmax, "convnext_base", "coco"),
    "kmax_convnext_large_coco": partial(kmax, "convnext_large", "coco"),
    "kmax_r50_cityscapes": partial(kmax, "resnet50", "cityscapes"),
    "kmax_axial_r50_cityscapes": partial(kmax, "axial_resnet50", "cityscapes"),
    "kmax_convnext_tiny_cityscapes": partial(kmax, "convnext_tiny", "cityscapes"),
    "kmax_convnext_small_cityscapes": partial(kmax, "convnext_small", "cityscapes"),
    "kmax_convnext_base_cityscapes": partial(kmax, "convnext_base", "cityscapes"),
    "kmax_convnext_large_cityscapes": partial(kmax, "convnext_large", "cityscapes"),
    "kmax_r50_ade20k": partial(kmax, "resnet50", "ade20k"),
    # The model-zoo ConvNeXt-L ADE20K checkpoint with the best PQ (50.9) was trained at 1281.
    "kmax_convnext_large_ade20k": partial(kmax, "convnext_large", "ade20k", crop_size=(1281, 1281)),
    "kmax_tiny_test": kmax_tiny_test,
    "polymax_tiny_synth_panoptic": polymax_tiny_synth_panoptic,
}
