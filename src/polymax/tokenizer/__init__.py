"""AiT's output tokenizer: a small VQ-VAE that turns a dense map (a depth map, an instance mask crop) into a short
grid of discrete tokens and back (paper: All in Tokens, §3.1; spec: shared/reference/oneformer_ait_spec.md §2).

``config.py`` the typed :class:`TokenizerConfig` (saved as a model folder's ``config.json``), ``presets.py`` the flat
table of tokenizer presets, ``codebook.py`` the EMA codebook (nearest-code quantiser), ``vqvae.py`` the encoder /
decoder and the encode / hard-decode / soft-decode API, ``train.py`` the training loop of ``polymax
train-tokenizer``.
"""

from __future__ import annotations

from polymax.tokenizer.config import TokenizerConfig
from polymax.tokenizer.presets import TOKENIZER_PRESETS

__all__ = ["TOKENIZER_PRESETS", "TokenizerConfig"]
