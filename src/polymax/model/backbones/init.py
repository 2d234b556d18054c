"""ImageNet initialisation of a model's backbone from the checkpoint layouts users have.

``load_backbone_init(backbone, path)`` reads a safetensors file or a weights-only ``.pth`` (a bare state dict, or
one under ``model`` / ``state_dict`` / ``model_ema``; ``module.`` prefixes dropped), recognises its key layout,
renames the keys to this package's and copies every tensor of matching shape. It returns one summary line
(loaded / missing / unexpected / classifier tensors skipped); a tensor whose shape differs (another model size)
is an error naming it.

Layouts:
- ResNet-50, torchvision or timm (the same names): ``conv1``, ``bn1``, ``layer{1-4}.{i}.conv{1-3}`` /
  ``bn{1-3}`` / ``downsample.{0,1}``, classifier ``fc``. deeplab2's ResNet has the same convolutions (7×7/2 stem,
  stride in the 3×3 as torchvision's v1.5) but no max-pool after the stem, and it sees images scaled to [−1, 1]
  instead of ImageNet-normalised ones; fine-tuning absorbs both (the weights are copied as stored).
- ConvNeXt, the official facebookresearch ImageNet-1K / 22K release (``downsample_layers``, ``stages.i.j``,
  classifier ``head`` / final ``norm``) or timm's (``stem``, ``stages.i.blocks.j``); see
  :mod:`polymax.model.backbones.convnext`.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from polymax.errors import UserError
from polymax.model.backbones.convnext import _official_to_ours, _read_state_dict, _timm_to_ours

_TORCHVISION_CONVS = {"conv1": "conv1.conv", "bn1": "conv1.bn", "conv2": "conv2.conv", "bn2": "conv2.bn",
                      "conv3": "conv3.conv", "bn3": "conv3.bn", "downsample.0": "shortcut.conv",
                      "downsample.1": "shortcut.bn"}


def _resnet_to_ours(key: str) -> str | None:
    """torchvision / timm ResNet key → deeplab2-ResNet key (None: the classifier)."""
    if key.startswith("fc."):
        return None
    if key.startswith("conv1."):
        return "stem.conv." + key.removeprefix("conv1.")
    if key.startswith("bn1."):
        return "stem.bn." + key.removeprefix("bn1.")
    parts = key.split(".")
    if parts[0].startswith("layer") and parts[0][5:].isdigit() and len(parts) >= 4:
        stage = int(parts[0][5:]) + 1                                   # layer1 → stage2 (stride 4)
        inner = ".".join(parts[2:-1])
        if inner in _TORCHVISION_CONVS:
            return f"stage{stage}.blocks.{parts[1]}.{_TORCHVISION_CONVS[inner]}.{parts[-1]}"
    return key


def _layout(keys: set[str]) -> tuple[str, callable]:
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        return "torchvision/timm ResNet", _resnet_to_ours
    if any(k.startswith("downsample_layers.") for k in keys):
        return "official ConvNeXt", _official_to_ours
    if any(k.startswith("stem.") for k in keys) and any(".blocks." in k for k in keys):
        return "timm ConvNeXt", _timm_to_ours
    raise UserError("model.backbone_init: the file holds neither a ResNet (conv1, layer1..4) nor a ConvNeXt "
                    "(downsample_layers / stem + stages) state dict")


def is_classifier(key: str) -> bool:
    return key.startswith(("fc.", "head.", "norm."))


def load_backbone_init(backbone: nn.Module, path: str | Path) -> str:
    """Copy ImageNet weights from ``path`` into ``backbone``; returns the one-line summary."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.backbone_init: {path} does not exist; pass an ImageNet checkpoint "
                        "(.safetensors or weights-only .pth)")
    source: dict[str, Tensor] = _read_state_dict(path)
    name, rename = _layout(set(source))
    renamed = {}
    skipped = 0
    for key, value in source.items():
        new = rename(key)
        if new is None:
            skipped += 1
        else:
            renamed[new] = value
    own = backbone.state_dict()
    loaded, wrong = {}, []
    for key, value in renamed.items():
        if key not in own:
            continue
        if value.shape != own[key].shape and value.numel() == own[key].numel() and key.endswith("gamma"):
            value = value.reshape(own[key].shape)            # layer scale stored as (C, 1, 1) by some exports
        if value.shape != own[key].shape:
            wrong.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
        else:
            loaded[key] = value.to(own[key].dtype)
    if wrong:
        raise UserError(f"model.backbone_init: {path} has {len(wrong)} tensors of another shape (e.g. {wrong[0]}); "
                        "is it the checkpoint of this backbone's size?")
    if not loaded:
        raise UserError(f"model.backbone_init: no tensor of {path} ({name} layout) fits this backbone "
                        f"({type(backbone).__name__})")
    backbone.load_state_dict(loaded, strict=False)
    # BatchNorm's batch counters are bookkeeping, not weights: absent from most exports, never worth a warning.
    missing = sorted(k for k in own if k not in loaded and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in renamed if k not in own)
    line = (f"backbone_init {path.name} ({name} layout): loaded {len(loaded)} tensors, missing {len(missing)}"
            + (f" (e.g. {', '.join(missing[:3])})" if missing else "")
            + f", unexpected {len(unexpected)}" + (f" (e.g. {', '.join(unexpected[:3])})" if unexpected else "")
            + f", classifier tensors skipped {skipped}")
    return line
