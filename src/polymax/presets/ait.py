"""AiT presets: the soft-token depth and instance tasks on our trunks, one flat table ``AIT_PRESETS``.

``ait_{r50,convnext_large}_nyu_depth``: the PolyMaX NYU depth trunk (backbone, os4 pixel decoder, six kMaX layers,
16 clusters, the 417 × 545 crop → 13 × 17 tokens) with the ``depth_tokens`` head on AiT's depth tokenizer
(``vqvae_nyu_depth``: ratio 32, 128 codes × 512). ``ait_tiny_synth_depth``: the tiny synthetic-room trunk with
``vqvae_tiny_synth_depth`` (ratio 8: 8 × 8 tokens on the 65 × 65 crop).

``ait_tiny_synth_instance``: the tiny synthetic-room kMaX trunk (``polymax_tiny_synth_panoptic``'s, 16 clusters) with
the ``instance_tokens`` head (class, box and 4 × 4 mask tokens per cluster) on ``vqvae_tiny_synth_mask``.

The tokenizer's weights come from ``tasks.<task>.tokenizer_weights`` (a folder of ``polymax train-tokenizer``),
empty in the presets: set it for training (docs/ait.md has the commands).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from polymax.config.model import ModelConfig, TaskConfig
from polymax.presets.kmax import polymax_tiny_synth_panoptic
from polymax.presets.polymax import polymax, polymax_tiny_synth


def with_tokens(config: ModelConfig, *, preset: str, tokenizer: str) -> ModelConfig:
    """``config`` (a PolyMaX depth preset) with its depth task replaced by depth_tokens on ``tokenizer``."""
    depth = config.task("depth")
    task = replace(depth, name="depth_tokens", tokenizer=tokenizer, aux_semantic="none")
    return replace(config, preset=preset, tasks=(task,))


def ait_nyu(short_backbone: str) -> ModelConfig:
    return with_tokens(polymax(short_backbone, "nyu", "depth"), preset=f"ait_{short_backbone}_nyu_depth",
                       tokenizer="vqvae_nyu_depth")


def ait_tiny_synth_depth() -> ModelConfig:
    return with_tokens(polymax_tiny_synth("depth"), preset="ait_tiny_synth_depth",
                       tokenizer="vqvae_tiny_synth_depth")


def ait_tiny_synth_instance() -> ModelConfig:
    task = TaskConfig(name="instance_tokens", aux_semantic="decoder", tokenizer="vqvae_tiny_synth_mask")
    return replace(polymax_tiny_synth_panoptic(), preset="ait_tiny_synth_instance", tasks=(task,))


AIT_PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "ait_r50_nyu_depth": partial(ait_nyu, "r50"),
    "ait_convnext_large_nyu_depth": partial(ait_nyu, "convnext_large"),
    "ait_tiny_synth_depth": ait_tiny_synth_depth,
    "ait_tiny_synth_instance": ait_tiny_synth_instance,
}
