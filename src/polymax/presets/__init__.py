"""Named model configurations: one flat table ``PRESETS`` of name → plain function returning a ModelConfig.

``kmax.py`` holds the kMaX-DeepLab presets (the official deeplab2 configs and the tiny synthetic one),
``polymax.py`` the PolyMaX task presets and their per-pixel DeepLabv3+ baselines, ``ait.py`` the AiT soft-token
depth presets, ``oneformer.py`` OneFormer on the kMaX trunk,
``multitask.py`` one model for every dense task. The VQ-VAE tokenizer presets are
``polymax.tokenizer.TOKENIZER_PRESETS``.
"""

from __future__ import annotations

from collections.abc import Callable

from polymax.config.model import ModelConfig
from polymax.presets.ait import AIT_PRESETS
from polymax.presets.kmax import KMAX_PRESETS
from polymax.presets.multitask import MULTITASK_PRESETS
from polymax.presets.oneformer import ONEFORMER_PRESETS
from polymax.presets.polymax import POLYMAX_PRESETS

PRESETS: dict[str, Callable[[], ModelConfig]] = {**KMAX_PRESETS, **POLYMAX_PRESETS, **AIT_PRESETS, **ONEFORMER_PRESETS,
                                                   **MULTITASK_PRESETS}

__all__ = ["PRESETS"]
