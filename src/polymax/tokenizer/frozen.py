"""The frozen tokenizer a token head decodes with and its criterion encodes targets with.

Both build it from the task's settings (``TaskConfig.tokenizer`` preset, ``tokenizer_weights`` folder), so that
the head and the criterion hold the same codebook: from the folder's weights when there is one, otherwise from a
fixed seed (a deterministic stand-in for tests and for a model whose weights come from its own model folder).

Frozen weights are buffers, not parameters: no optimiser, weight decay, gradient clipping or DDP bucket sees them,
and its owners keep it in eval mode (``train()`` of the head and the criterion), so its codebook never moves.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from polymax.errors import UserError
from polymax.tokenizer.config import TokenizerConfig
from polymax.tokenizer.presets import TOKENIZER_PRESETS
from polymax.tokenizer.vqvae import VQVAE

DEFAULT_TOKENIZER = "vqvae_tiny_synth_depth"
STAND_IN_SEED = 0


def tokenizer_preset(name: str) -> TokenizerConfig:
    name = name or DEFAULT_TOKENIZER
    if name not in TOKENIZER_PRESETS:
        raise UserError(f"unknown tokenizer preset {name!r}; use one of {', '.join(TOKENIZER_PRESETS)}")
    return TOKENIZER_PRESETS[name]()


def same_architecture(a: TokenizerConfig, b: TokenizerConfig) -> bool:
    """Equal apart from the preset name, the training crop and τ (which change no weight)."""
    keep = ("kind", "channels", "downsample_ratio", "hidden_dim", "num_resnet_blocks", "num_codes", "code_dim",
            "use_norm", "max_value")
    return all(getattr(a, name) == getattr(b, name) for name in keep)


def build_frozen_tokenizer(preset: str, weights: str) -> VQVAE:
    """The tokenizer of preset ``preset`` in eval mode with its weights as buffers: those of the tokenizer folder
    ``weights`` when it exists, the seeded stand-in otherwise (a missing folder is the caller's to report)."""
    config = tokenizer_preset(preset)
    if weights and Path(weights).is_dir():
        model = read_tokenizer_folder(Path(weights), expected=config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(STAND_IN_SEED)
            model = VQVAE(config)
    return freeze(model.eval())


def read_tokenizer_folder(folder: Path, *, expected: TokenizerConfig) -> VQVAE:
    """A tokenizer model folder (``config.json`` + ``model.safetensors`` of ``polymax train-tokenizer``) whose
    architecture must be ``expected``'s. (Read here rather than through ``polymax.load_model``, which builds
    models through the task table that imports this module.)"""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    hint = f"train one with `polymax train-tokenizer --preset {expected.preset}`"
    try:
        header = json.loads((folder / "config.json").read_text())
        config = TokenizerConfig.from_dict(header.get("config"))
    except (OSError, ValueError, AttributeError, UserError) as error:
        raise UserError(f"tokenizer folder {folder} has no readable tokenizer config.json ({error}); {hint}") from None
    if not same_architecture(config, expected):
        raise UserError(f"tokenizer folder {folder} does not hold a {expected.preset} tokenizer; {hint}")
    model = VQVAE(config)
    try:
        state = load_file(str(folder / "model.safetensors"))
        model.load_state_dict(state)
    except (OSError, SafetensorError, RuntimeError) as error:
        raise UserError(f"{folder / 'model.safetensors'} does not hold the tokenizer's weights "
                        f"({str(error).splitlines()[0]}); {hint}") from None
    return model


def freeze(module: nn.Module) -> nn.Module:
    """Turn every parameter of ``module`` into a buffer of the same name (state-dict keys unchanged)."""
    for child in module.modules():
        for name, parameter in list(child._parameters.items()):
            if parameter is None:
                continue
            del child._parameters[name]
            child.register_buffer(name, parameter.detach())
    return module
