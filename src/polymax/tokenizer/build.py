"""The builder's tokenizer branch: ``polymax.build_model("vqvae_nyu_depth")`` or ``build_model(TokenizerConfig)``."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from torch import nn

from polymax.errors import UserError
from polymax.tokenizer.config import TokenizerConfig
from polymax.tokenizer.presets import TOKENIZER_PRESETS


def is_tokenizer(preset: Any) -> bool:
    return isinstance(preset, TokenizerConfig) or (isinstance(preset, str) and preset in TOKENIZER_PRESETS)


def resolve_tokenizer_config(preset: str | TokenizerConfig, **overrides: Any) -> TokenizerConfig:
    config = preset if isinstance(preset, TokenizerConfig) else TOKENIZER_PRESETS[preset]()
    known = {f.name for f in fields(TokenizerConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserError(f"unknown tokenizer override {unknown[0]!r}; TokenizerConfig has {sorted(known)}")
    return replace(config, **overrides)


def build_tokenizer_model(preset: str | TokenizerConfig, **overrides: Any) -> nn.Module:
    from polymax.tokenizer.vqvae import VQVAE
    return VQVAE(resolve_tokenizer_config(preset, **overrides))
