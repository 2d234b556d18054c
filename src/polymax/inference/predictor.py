"""Inference for users: image in, typed maps at the image's own resolution out.

    predictor = Predictor.from_pretrained("my_model")          # or Predictor(model), Predictor.from_onnx(file)
    result = predictor.predict(Image.open("room.jpg"))         # PIL image or numpy array, any size
    result.semantic, result.panoptic, result.segments, result.depth, result.normals   # None where not produced

Geometry (the model's evaluation preprocessing, deeplab2's): with ``resize="fit"`` (default) the image is
resized (bilinear, align_corners) so that it fits inside the model's geometry ``size`` (default: the preset's
``crop_size``) with its aspect ratio kept, then padded bottom / right with the mean pixel value 127.5 (which
the model normalises to 0, as its own padding) to the 32k+1 size the network runs at. With ``resize="none"``
the image keeps its size and is only padded to the next 32k+1 size. The outputs are resized onto the padded
input, the padding is cropped away, and the maps are brought back to the original size: label maps with
nearest neighbours, depth / normals / probabilities bilinearly (normals re-normalised). Panoptic merging
runs at the network's input resolution, so its area limits mean what they meant in training and evaluation.

Batching: ``predict_batch`` runs up to ``batch_size`` images per forward pass; images whose padded sizes
differ go in separate passes, so every result equals the one-image result (no extra padding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from polymax.config.model import ModelConfig
from polymax.errors import UserError
from polymax.geometry import resize_bilinear, resize_nearest
from polymax.inference.images_io import to_rgb
from polymax.model.meta_arch import padded_size, resize_to_input

PAD_VALUE = 127.5  # pixel value that the model's normalisation maps to 0


@dataclass
class RawOutputs:
    """Network outputs for a batch at the padded input's model resolution (stride 4 or 2).

    mask_logits: (B, K, h, w); class_logits: (B, K, C + 1) for panoptic / semantic models;
    depth: (B, 1, h, w) metres; normals: (B, 3, h, w).
    """

    mask_logits: Tensor
    class_logits: Tensor | None = None
    depth: Tensor | None = None
    normals: Tensor | None = None


class Runner(Protocol):
    """Runs the network: (B, 3, H, W) float RGB 0..255, H and W of the form 32k+1 → RawOutputs."""

    config: ModelConfig
    fixed_size: tuple[int, int] | None   # the only input (H, W) a static graph takes; None = any

    def __call__(self, images: Tensor) -> RawOutputs: ...


class TorchRunner:
    """A PyTorch model (built by polymax) on a device, in eval mode, without autograd.

    With ``optimise`` (the default) it runs ``optimise_for_inference``'s copy of the model: BatchNorms folded
    and, on a CPU, channels-last memory and fused oneDNN convolutions (1.21–1.29× faster for kMaX-R50 at 641²
    on two cores; the same outputs to float32 rounding). Without, the model itself, moved to the device.
    """

    fixed_size = None

    def __init__(self, model: nn.Module, *, device: str | torch.device = "cpu", optimise: bool = True) -> None:
        config = getattr(model, "config", None)
        if not isinstance(config, ModelConfig):
            raise TypeError("Predictor needs a model built by polymax.build_model / polymax.load_model")
        self.device = resolve_device(device)
        if optimise:
            from polymax.inference.fuse import optimise_for_inference
            self.model = optimise_for_inference(model, device=self.device)
        else:
            self.model = model.to(self.device).eval()
        self.config = config

    def __call__(self, images: Tensor) -> RawOutputs:
        with torch.inference_mode():
            out = self.model(images.to(self.device))
        as_float = lambda t: None if t is None else t.float()
        return RawOutputs(mask_logits=out.mask_logits.float(), class_logits=as_float(out.class_logits),
                          depth=as_float(out.depth), normals=as_float(out.normals))


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' → cuda if available else cpu; a clear error for a device this machine lacks."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UserError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    return resolved


@dataclass
class SegmentInfo:
    """One panoptic segment, measured on the original-size map.

    id: 1-based index (the value in the 16-bit segment PNG); panoptic_id: class·label_divisor + instance;
    category: class index 0..C−1; bbox: (x, y, width, height) in pixels; score: class confidence.
    """

    id: int
    panoptic_id: int
    category: int
    category_name: str
    is_thing: bool
    area: int
    bbox: tuple[int, int, int, int]
    score: float


@dataclass
class PredictionResult:
    """What the model's task produces for one image, at its original size (H, W); None where not produced.

    semantic: (H, W) int32 class ids (``ignore_label`` = void) — panoptic and semantic models.
    panoptic: (H, W) int64 class·label_divisor + instance (void = ignore_label·label_divisor); segments.
    depth: (H, W) float32 metres. normals: (H, W, 3) float32 unit vectors (x, y, z).
    probabilities: (K, H, W) float32 per-cluster probability maps, only when asked for.
    """

    task: str
    size: tuple[int, int]
    semantic: np.ndarray | None = None
    panoptic: np.ndarray | None = None
    segments: list[SegmentInfo] | None = None
    depth: np.ndarray | None = None
    normals: np.ndarray | None = None
    probabilities: np.ndarray | None = None


@dataclass(frozen=True)
class Geometry:
    """original: the image's (H, W); content: after resizing; network: the padded size fed to the runner."""

    original: tuple[int, int]
    content: tuple[int, int]
    network: tuple[int, int]


class Predictor:
    """Turns images into :class:`PredictionResult`; see the module docstring for the geometry.

    Args:
        model: a polymax model (``nn.Module`` with ``.config``) or a :class:`Runner` (e.g. ONNX).
        device: cpu, cuda, cuda:N or auto (PyTorch models only).
        batch_size: images per forward pass in :meth:`predict_batch`.
        resize: 'fit' (into ``size``, default) or 'none' (the network sees the image's own size).
        size: the (H, W) geometry for 'fit'; default the preset's crop size (a static graph's input size).
        optimise: run an inference-optimised copy of a PyTorch model (:class:`TorchRunner`; default on).
    """

    def __init__(self, model: nn.Module | Runner, *, device: str | torch.device = "cpu", batch_size: int = 1,
                 resize: str = "fit", size: tuple[int, int] | None = None, optimise: bool = True) -> None:
        self.runner: Runner = (TorchRunner(model, device=device, optimise=optimise) if isinstance(model, nn.Module)
                               else model)
        self.config = self.runner.config
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if resize not in ("fit", "none"):
            raise UserError(f"resize must be 'fit' or 'none', got {resize!r}")
        fixed = self.runner.fixed_size
        if fixed is not None and (resize != "fit" or (size is not None and tuple(size) != tuple(fixed))):
            raise UserError(f"this exported graph takes exactly {fixed[0]}x{fixed[1]} (HxW) inputs; use resize "
                            "'fit' without another size, or export with --dynamic")
        self.size = tuple(fixed or size or self.config.crop_size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise UserError(f"size must be two positive numbers (H, W), got {self.size}")
        self.batch_size, self.resize = batch_size, resize
        self._postprocess = None
        if self.config.task.kind == "panoptic":
            from polymax.build import build_postprocessor
            self._postprocess = build_postprocessor(self.config)

    @classmethod
    def from_pretrained(cls, path: str | Path, **options) -> Predictor:
        """A predictor for a model directory written by ``save_pretrained`` / ``polymax train``."""
        from polymax.io.pretrained import load_model
        return cls(load_model(path), **options)

    @classmethod
    def from_onnx(cls, path: str | Path, **options) -> Predictor:
        """A predictor running a graph written by ``polymax export onnx`` in onnxruntime (CPU)."""
        from polymax.export.onnx import OnnxRunner
        return cls(OnnxRunner(path), **options)

    def predict(self, image: Image.Image | np.ndarray, *, probabilities: bool = False) -> PredictionResult:
        """One image (PIL or numpy, see :mod:`polymax.inference.images_io` for accepted formats)."""
        return self.predict_batch([image], probabilities=probabilities)[0]

    def predict_batch(self, images: Sequence[Image.Image | np.ndarray], *, probabilities: bool = False
                      ) -> list[PredictionResult]:
        """Results in input order; up to ``batch_size`` images of equal padded size per forward pass."""
        arrays = [to_rgb(image) for image in images]
        plans = [self.geometry(array.shape[:2]) for array in arrays]
        results: list[PredictionResult | None] = [None] * len(arrays)
        pending = list(range(len(arrays)))
        while pending:
            network = plans[pending[0]].network
            group = [i for i in pending if plans[i].network == network][: self.batch_size]
            batch = torch.cat([self._prepare(arrays[i], plans[i]) for i in group])
            raw = self.runner(batch)
            for slot, index in enumerate(group):
                results[index] = self._finish(raw, slot, plans[index], probabilities)
            pending = [i for i in pending if i not in group]
        return results

    def geometry(self, original: tuple[int, int]) -> Geometry:
        """Where an image of size ``original`` (H, W) goes inside the network's input."""
        original = (int(original[0]), int(original[1]))
        if self.resize == "none":
            return Geometry(original, original, padded_size(original))
        scale = min(self.size[0] / original[0], self.size[1] / original[1])
        content = tuple(min(max(1, round(n * scale)), limit) for n, limit in zip(original, self.size))
        network = self.runner.fixed_size or padded_size(self.size)
        return Geometry(original, content, tuple(network))

    def _prepare(self, array: np.ndarray, plan: Geometry) -> Tensor:
        """(H, W, 3) 0..255 → (1, 3, H_net, W_net): resized into the content box, padded with 127.5."""
        image = torch.from_numpy(array).permute(2, 0, 1)[None]
        if plan.content != plan.original:
            image = F.interpolate(image, size=plan.content, mode="bilinear", align_corners=True)
        pad_h, pad_w = plan.network[0] - plan.content[0], plan.network[1] - plan.content[1]
        return F.pad(image, (0, pad_w, 0, pad_h), value=PAD_VALUE)

    def _finish(self, raw: RawOutputs, slot: int, plan: Geometry, probabilities: bool) -> PredictionResult:
        kind, info = self.config.task.kind, self.config.dataset
        result = PredictionResult(task=kind, size=plan.original)
        logits = raw.mask_logits[slot: slot + 1]
        if kind == "panoptic":
            maps = self._postprocess(logits, raw.class_logits[slot: slot + 1], plan.network)[0]
            result.semantic = _labels(maps.semantic, plan).astype(np.int32)
            result.panoptic = _labels(maps.panoptic, plan)
            result.segments = _measure_segments(result.panoptic, maps.segments, info.class_names)
        elif kind == "semantic":   # K = C clusters, one per class: the class is the argmax cluster
            result.semantic = _labels(resize_to_input(logits, plan.network).argmax(dim=1)[0], plan).astype(np.int32)
        if raw.depth is not None:
            result.depth = _dense(raw.depth[slot: slot + 1], plan)[0, 0].cpu().numpy()
        if raw.normals is not None:
            normals = F.normalize(_dense(raw.normals[slot: slot + 1], plan), dim=1)
            result.normals = normals[0].permute(1, 2, 0).contiguous().cpu().numpy()
        if probabilities:
            probs = resize_to_input(logits, plan.network).softmax(dim=1)
            result.probabilities = _dense(probs, plan, network_resolution=True)[0].cpu().numpy()
        return result


def _dense(maps: Tensor, plan: Geometry, *, network_resolution: bool = False) -> Tensor:
    """(1, C, h, w) model-resolution maps → (1, C, H, W) on the original image (bilinear, align_corners)."""
    if not network_resolution:
        maps = resize_to_input(maps.float(), plan.network)
    return resize_bilinear(maps[..., : plan.content[0], : plan.content[1]], plan.original)


def _labels(labels: Tensor, plan: Geometry) -> np.ndarray:
    """(H_net, W_net) integer map → (H, W) int64 numpy on the original image (nearest, align_corners grid)."""
    labels = resize_nearest(labels[: plan.content[0], : plan.content[1]], plan.original)
    return labels.cpu().numpy().astype(np.int64)


def _measure_segments(panoptic: np.ndarray, segments, class_names: Sequence[str]) -> list[SegmentInfo]:
    """The post-processor's segments that survive at the original size, with area and bbox measured there."""
    from scipy import ndimage

    values, inverse = np.unique(panoptic, return_inverse=True)           # values[inverse] == panoptic
    inverse = inverse.reshape(panoptic.shape)
    areas = np.bincount(inverse.ravel(), minlength=len(values))
    boxes = ndimage.find_objects(inverse.astype(np.int32) + 1)            # one (rows, cols) slice per value
    position = {int(value): index for index, value in enumerate(values)}
    kept: list[SegmentInfo] = []
    for segment in segments:
        index = position.get(int(segment.id))
        if index is None or areas[index] == 0:
            continue   # the segment lay in the padding, or vanished when resized to the original size
        rows, cols = boxes[index]
        name = class_names[segment.category] if segment.category < len(class_names) else str(segment.category)
        kept.append(SegmentInfo(id=len(kept) + 1, panoptic_id=int(segment.id), category=int(segment.category),
                                category_name=name, is_thing=bool(segment.is_thing), area=int(areas[index]),
                                bbox=(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start),
                                score=float(segment.score) if math.isfinite(segment.score) else 0.0))
    return kept
