"""Named model configurations: one flat table ``PRESETS`` of name → plain function returning a ModelConfig.

``kmax.py`` holds the kMaX-DeepLab presets (the official deeplab2 configs and the tiny synthetic one),
``polymax.py`` the PolyMaX task presets and their per-pixel DeepLabv3+ baselines, ``oneformer.py`` OneFormer on
the kMaX trunk.
"""

from __future__ import annotations

from collections.abc import Callable

from polymax.config.model import ModelConfig
from polymax.presets.kmax import KMAX_PRESETS
from polymax.presets.oneformer import ONEFORMER_PRESETS
from polymax.presets.polymax import POLYMAX_PRESETS

PRESETS: dict[str, Callable[[], ModelConfig]] = {**KMAX_PRESETS, **POLYMAX_PRESETS}
PRESETS.update(ONEFORMER_PRESETS)   # OneFormer on the kMaX trunk (presets/oneformer.py)

__all__ = ["PRESETS"]
