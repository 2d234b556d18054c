"""ConvNeXt T/S/B/L as deeplab2 runs it for kMaX-DeepLab (zero padding for 32k+1 inputs).

  pad (1 top/left, 2 bottom/right) → 4×4/4 conv → LN                      stage1 (B, d0, H/4, W/4)
  stage i (i = 0..3): [pad (0, 1) → LN → 2×2/2 conv, for i > 0] → blocks    stage{i+2} (B, d_i, H/2^(i+2), ...)
  block: 7×7 depthwise conv → LN → Linear 4d → GELU → Linear d → ·γ (layer scale) → drop path → + input

The padding keeps deeplab2's geometry: the stem maps n → ⌊(n + 3)/4⌋ = ⌈n/4⌉ and each downsample
n → ⌊(n + 1)/2⌋ = ⌈n/2⌉, so every backbone here maps a side n to ⌈n/s⌉ at stride s, and a 32k+1 side to
(n − 1)/s + 1 (1281 → 321, 161, 81, 41). Zeros are padded *before* the downsampling LayerNorm, which turns
them into β: the order matters for parity. All LayerNorms use ε = 1e-6; GELU is the exact erf form.

Parameter names follow the official PyTorch ConvNeXt (``downsample_layers.*``, ``stages.i.j.*``) so that
:func:`load_imagenet_weights` is nearly a one-to-one copy; the channels-first LayerNorms add a ``.norm``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.errors import UserError
from polymax.model.backbones.checkpointing import run_stage
from polymax.model.layers.drop_path import DropPath
from polymax.model.layers.norms import LN_EPS, ChannelLayerNorm
from polymax.structures import Features

STEM_PADDING = (1, 2, 1, 2)         # F.pad order: left, right, top, bottom
DOWNSAMPLE_PADDING = (0, 1, 0, 1)


class ConvNeXtBlock(nn.Module):
    """(B, C, H, W) → (B, C, H, W). Channels-last inside so that LN and the MLP are plain layers."""

    def __init__(self, channels: int, *, drop_path_keep: float = 1.0, layer_scale_init: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=LN_EPS)
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), layer_scale_init))
        self.drop_path = DropPath(drop_path_keep)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)                       # (B, H, W, C)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y)))) * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXt(nn.Module):
    """ConvNeXt with deeplab2's downstream padding. drop_path_keep: the last block's keep probability; keeps
    go linearly from 1.0 (first block) to it over all blocks (timm's drop_path_rate = 1 − drop_path_keep).
    checkpoint: gradient checkpointing of the four stages' blocks in training (:mod:`.checkpointing`)."""

    def __init__(self, *, depths: tuple[int, ...], dims: tuple[int, ...], drop_path_keep: float = 1.0,
                 layer_scale_init: float = 1e-6, checkpoint: bool = False) -> None:
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt needs 4 depths and 4 dims, got {depths} and {dims}")
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), ChannelLayerNorm(dims[0]))]
            + [nn.Sequential(ChannelLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
               for i in range(3)])
        total = sum(depths)
        keeps = [1.0 - (1.0 - drop_path_keep) * k / max(total - 1, 1) for k in range(total)]
        self.stages = nn.ModuleList()
        first = 0
        for depth, dim in zip(depths, dims):
            self.stages.append(nn.Sequential(*(
                ConvNeXtBlock(dim, drop_path_keep=keeps[first + j], layer_scale_init=layer_scale_init)
                for j in range(depth))))
            first += depth
        self.channels: tuple[int, ...] = (dims[0], dims[0], dims[1], dims[2], dims[3])
        self.strides: tuple[int, ...] = (4, 4, 8, 16, 32)
        self.checkpoint = checkpoint
        self._init_weights()

    def _init_weights(self) -> None:
        # deeplab2 / official ConvNeXt: truncated normal σ = 0.02 for conv and dense kernels, zero biases.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Features:
        stem = self.downsample_layers[0](F.pad(x, STEM_PADDING))
        outputs = [stem]
        x = run_stage(self.stages[0], stem, enabled=self.checkpoint)
        outputs.append(x)
        for i in range(1, 4):
            x = run_stage(self.stages[i], self.downsample_layers[i](F.pad(x, DOWNSAMPLE_PADDING)),
                          enabled=self.checkpoint)
            outputs.append(x)
        return Features(*outputs)


def convnext_tiny(*, drop_path_keep: float = 1.0, checkpoint: bool = False) -> ConvNeXt:
    """27.82M parameters; endpoints (96, 96, 192, 384, 768) channels."""
    return ConvNeXt(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), drop_path_keep=drop_path_keep,
                    checkpoint=checkpoint)


def convnext_small(*, drop_path_keep: float = 1.0, checkpoint: bool = False) -> ConvNeXt:
    """49.45M parameters; endpoints (96, 96, 192, 384, 768) channels."""
    return ConvNeXt(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768), drop_path_keep=drop_path_keep,
                    checkpoint=checkpoint)


def convnext_base(*, drop_path_keep: float = 1.0, checkpoint: bool = False) -> ConvNeXt:
    """87.56M parameters; endpoints (128, 128, 256, 512, 1024) channels."""
    return ConvNeXt(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024), drop_path_keep=drop_path_keep,
                    checkpoint=checkpoint)


def convnext_large(*, drop_path_keep: float = 1.0, checkpoint: bool = False) -> ConvNeXt:
    """196.23M parameters; endpoints (192, 192, 384, 768, 1536) channels."""
    return ConvNeXt(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536), drop_path_keep=drop_path_keep,
                    checkpoint=checkpoint)


# ---------------------------------------------------------------------------------------------------------
# ImageNet weights from the common PyTorch layouts.

def _official_to_ours(key: str) -> str | None:
    """facebookresearch/ConvNeXt key → our key (None: not part of the backbone, e.g. the classifier)."""
    if key.startswith(("head.", "norm.")):
        return None
    parts = key.split(".")
    # Channels-first LayerNorms: stem `downsample_layers.0.1.*` and downsample `downsample_layers.i.0.*`.
    if parts[0] == "downsample_layers" and ((parts[1] == "0" and parts[2] == "1") or
                                           (parts[1] != "0" and parts[2] == "0")):
        return ".".join(parts[:3] + ["norm"] + parts[3:])
    return key


_TIMM_BLOCK_RENAMES = {"conv_dw": "dwconv", "mlp.fc1": "pwconv1", "mlp.fc2": "pwconv2", "norm": "norm",
                       "gamma": "gamma"}


def _timm_to_ours(key: str) -> str | None:
    """timm ConvNeXt key → our key (None for the head)."""
    parts = key.split(".")
    if parts[0] == "head":
        return None
    if parts[0] == "stem":                                   # stem.0 conv, stem.1 LN
        return f"downsample_layers.0.{parts[1]}." + ("norm." if parts[1] == "1" else "") + ".".join(parts[2:])
    if parts[0] == "stages" and parts[2] == "downsample":   # stages.i.downsample.{0 LN, 1 conv}
        return (f"downsample_layers.{parts[1]}.{parts[3]}." + ("norm." if parts[3] == "0" else "")
                + ".".join(parts[4:]))
    if parts[0] == "stages" and parts[2] == "blocks":
        inner = ".".join(parts[4:-1])
        name = _TIMM_BLOCK_RENAMES.get(inner, inner) if inner else parts[-1]
        suffix = "" if inner == "" else "." + parts[-1]
        return f"stages.{parts[1]}.{parts[3]}.{name}{suffix}"
    return key


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass a ConvNeXt ImageNet checkpoint (.pth or .safetensors)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any reader failure means a bad file for the user
        raise UserError(f"{path}: cannot read it as a PyTorch checkpoint ({error})") from None
    for wrapper in ("model", "state_dict", "model_ema"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return {key.removeprefix("module."): value for key, value in state.items() if isinstance(value, Tensor)}


def load_imagenet_weights(model: ConvNeXt, path: str | Path) -> None:
    """Copy ImageNet ConvNeXt weights (official facebookresearch or timm key layout) into model.

    The classifier head and final norm are ignored. Raises UserError naming missing or mis-shaped keys.
    """
    path = Path(path)
    source = _read_state_dict(path)
    rename = _timm_to_ours if any(key.startswith("stem.") for key in source) else _official_to_ours
    renamed = {new: value for key, value in source.items() if (new := rename(key)) is not None}
    target = model.state_dict()
    missing = sorted(set(target) - set(renamed))
    if missing:
        raise UserError(f"{path}: {len(missing)} ConvNeXt weights missing (e.g. {', '.join(missing[:3])}); "
                        f"is it a ConvNeXt checkpoint of this size?")
    reshaped = {}
    wrong = []
    for key, tensor in target.items():
        value = renamed[key]
        if value.numel() == tensor.numel() and key.endswith("gamma"):
            value = value.reshape(tensor.shape)          # some exports store layer scale as (C, 1, 1)
        if value.shape != tensor.shape:
            wrong.append(f"{key} {tuple(value.shape)} vs {tuple(tensor.shape)}")
        reshaped[key] = value.to(tensor.dtype)
    if wrong:
        raise UserError(f"{path}: {len(wrong)} ConvNeXt weights have the wrong shape (e.g. {wrong[0]}); "
                        f"pick the checkpoint of the matching ConvNeXt size")
    model.load_state_dict(reshaped)
