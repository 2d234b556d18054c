"""kMaX-DeepLab / PolyMaX composition root: image → Prediction.

    images (B, 3, H, W) RGB 0..255, any H, W
      → x/127.5 − 1, pad bottom/right to (32k+1)² with 0 (= pixel 127.5, as deeplab2's preprocessing)
      → backbone → Features → pixel_decoder → PixelFeatures → kmax_decoder → ClusterCentres
      → mask_head (final) → task_head → Prediction (+ one aux Prediction per kMaX layer)

Outputs live at the *padded model resolution*: a map at stride s has (H_pad − 1)/s + 1 rows, with
H_pad = 32·⌈(H − 1)/32⌉ + 1. Auxiliary predictions stay at their kMaX layer's own stride (32, 16, 8).
:func:`resize_to_input` maps any such output back onto the input's H × W (bilinear with align_corners to
the padded size, then crop), which is what the post-processing does.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.config.model import ModelConfig
from polymax.errors import UserError
from polymax.structures import Prediction

PAD_MULTIPLE = 32


def padded_size(size: tuple[int, int]) -> tuple[int, int]:
    """The 32k+1 size an input of ``size`` (H, W) is padded to: 129 → 129, 130 → 161, 100 → 129."""
    return tuple(PAD_MULTIPLE * math.ceil((n - 1) / PAD_MULTIPLE) + 1 for n in size)


def resize_to_input(maps: Tensor, input_size: tuple[int, int], *, mode: str = "bilinear") -> Tensor:
    """(B, C, h, w) model-resolution maps → (B, C, H, W) on the original input.

    Resizes to the padded size (bilinear with align_corners, or nearest) and crops the padding away.
    """
    size = padded_size(tuple(input_size))
    if tuple(maps.shape[-2:]) != size:
        if mode == "bilinear":
            maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=True)
        elif mode == "nearest":
            maps = F.interpolate(maps, size=size, mode="nearest")
        else:
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    return maps[..., : input_size[0], : input_size[1]]


def prediction_at_input_size(prediction: Prediction, input_size: tuple[int, int]) -> Prediction:
    """A copy of ``prediction`` whose per-pixel maps (B, C, h, w) are resized onto the input's H × W.

    Per-cluster fields (class logits, cluster depths / normals) are kept; ``aux`` is dropped. Resized
    pixel features / normals are not re-normalised (as deeplab2's trainer does for its auxiliary outputs).
    """
    maps = {name: resize_to_input(value, input_size) for name, value in prediction.tensors().items()
            if value.ndim == 4}
    return replace(prediction, aux=[], **maps)


def _values_unavailable(images: Tensor) -> bool:
    """True while tracing / compiling / exporting, or on the meta device: no data-dependent checks then."""
    compiling = getattr(torch.compiler, "is_compiling", lambda: False)()
    return (images.device.type == "meta" or compiling or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export())


def check_images(images: Tensor) -> None:
    """Clear errors for inputs the model cannot take (rank, channels, dtype, NaN / Inf)."""
    if not isinstance(images, Tensor):
        raise UserError(f"the model takes a torch.Tensor of images, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise UserError(f"images must have shape (B, 3, H, W) (RGB, values 0..255), got {tuple(images.shape)}; "
                        "add a batch axis with images[None] or move channels first with .permute(0, 3, 1, 2)")
    if not images.is_floating_point():
        raise UserError(f"images must be a float tensor with values 0..255, got dtype {images.dtype}; "
                        "convert with images.float()")
    if min(images.shape[2:]) < 1 or images.shape[0] < 1:
        raise UserError(f"images must not be empty, got shape {tuple(images.shape)}")
    if not _values_unavailable(images) and not bool(torch.isfinite(images).all()):
        raise UserError("images contain NaN or infinite values; pass RGB values in 0..255")


class KMaX(nn.Module):
    """The full model. Submodules: ``backbone``, ``pixel_decoder``, ``kmax_decoder``, ``mask_head``,
    ``task_head`` and, for training only, ``semantic_branch`` (None when the preset has none).

    ``config`` is the complete :class:`ModelConfig` the model was built from (saved with the weights).
    """

    def __init__(self, *, backbone: nn.Module, pixel_decoder: nn.Module, kmax_decoder: nn.Module,
                 mask_head: nn.Module, task_head: nn.Module, semantic_branch: nn.Module | None = None,
                 config: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.kmax_decoder = kmax_decoder
        self.mask_head = mask_head
        self.task_head = task_head
        self.semantic_branch = semantic_branch
        self.config = config

    @staticmethod
    def preprocess(images: Tensor) -> Tensor:
        """(B, 3, H, W) 0..255 → normalised (B, 3, H_pad, W_pad), padding = 0 (pixel value 127.5)."""
        check_images(images)
        height, width = images.shape[-2:]
        pad_h, pad_w = padded_size((height, width))
        x = images / 127.5 - 1.0
        if (pad_h, pad_w) != (height, width):
            x = F.pad(x, (0, pad_w - width, 0, pad_h - height), value=0.0)
        return x

    def forward(self, images: Tensor) -> Prediction:
        """Prediction at the padded model resolution; ``semantic_logits`` only in training mode."""
        return self._run(images, with_semantic=self.training)

    def forward_with_semantic(self, images: Tensor) -> Prediction:
        """Like ``forward`` but also runs the training-only semantic branch (e.g. for parity checks)."""
        if self.semantic_branch is None:
            raise UserError(f"preset {self.config.preset!r} has no auxiliary semantic branch")
        return self._run(images, with_semantic=True)

    def _run(self, images: Tensor, *, with_semantic: bool) -> Prediction:
        features = self.backbone(self.preprocess(images))
        pixels = self.pixel_decoder(features)
        centres = self.kmax_decoder(pixels)
        final = self.mask_head(pixels.high_res, centres.mask_embeddings, centres.class_embeddings)
        layers = centres.layers
        prediction = self.task_head(final, len(layers))
        prediction.aux = [self.task_head(layer, index) for index, layer in enumerate(layers)]
        if with_semantic and self.semantic_branch is not None:
            prediction.semantic_logits = self.semantic_branch(features)
        return prediction

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` to the directory ``path`` (see polymax.io.pretrained)."""
        from polymax.io.pretrained import save_pretrained
        save_pretrained(self, path)
