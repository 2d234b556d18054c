"""Inference for users: image in, typed maps at the image's own resolution out.

    predictor = Predictor.from_pretrained("my_model")          # or Predictor(model), Predictor.from_onnx(file)
    result = predictor.predict("room.jpg")                     # a path, PIL image, numpy array or tensor, any size
    results = predictor.predict_batch(["a.jpg", "b.jpg"])      # or a (B, 3, H, W) tensor / (B, H, W, 3) array
    result.task, result.size                                   # the task's typed result (polymax.structures):
    result.semantic, result.panoptic, result.segments          #   SegmentationResult (panoptic / semantic / instance)
    result.depth                                               #   DepthResult
    result.normals                                             #   NormalsResult

A model with several tasks runs the one named by ``task=`` (``--task`` on the command line).

Geometry (the model's evaluation preprocessing, deeplab2's): with ``resize="fit"`` (default) the image is
resized (bilinear, align_corners) so that it fits inside the model's geometry ``size`` (default: the preset's
``crop_size``) with its aspect ratio kept, then padded bottom / right with the mean pixel value 127.5 (which
the model normalises to 0, as its own padding) to the 32k+1 size the network runs at. With ``resize="none"``
the image keeps its size and is only padded to the next 32k+1 size. The outputs are resized onto the padded
input, the padding is cropped away, and the maps are brought back to the original size (the task's ``decode``,
:mod:`polymax.tasks`): label maps with nearest neighbours, depth / normals / probabilities bilinearly (normals
re-normalised). Panoptic merging runs at the network's input resolution, so its area limits mean what they meant
in training and evaluation.

Batching: ``predict_batch`` runs up to ``batch_size`` images per forward pass; images whose padded sizes
differ go in separate passes, so every result equals the one-image result (no extra padding).

Memory: an image whose longer side exceeds ``max_size`` (default 2048) is first shrunk to it, in uint8 with an
antialiasing filter, before any float copy exists; the network then sees the geometry above and the results are
still mapped back to the image's full size. So a 12-megapixel photo costs what a 2048-pixel one does, plus the
full-size result maps (e.g. 4000 × 3000: int64 panoptic ids 96 MB, int32 classes 48 MB).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from polymax.errors import UserError
from polymax.geometry import Geometry, padded_size, resize_bilinear
from polymax.inference.images_io import load_rgb, to_rgb
from polymax.inference.runner import Runner, TorchRunner
from polymax.structures import Result, TaskOutput
from polymax.tasks import get_task
from polymax.tasks.base import output_slice, probabilities_at_input

# One image as the Predictor takes it (see as_arrays).
ImageInput = str | os.PathLike | Image.Image | np.ndarray | Tensor
PAD_VALUE = 127.5  # pixel value that the model's normalisation maps to 0
MAX_SIZE = 2048    # longer side beyond which an image is shrunk (uint8) before anything else


class Predictor:
    """Turns images into the task's :class:`~polymax.structures.Result`; see the module docstring for the geometry.

    Args:
        model: a polymax model (``nn.Module`` with ``.config``) or a :class:`~polymax.inference.runner.Runner`
            (e.g. ONNX).
        task: the task to run (None = the model's only task; a one-line error listing the choices otherwise).
        device: cpu, cuda, cuda:N or auto (PyTorch models only).
        batch_size: images per forward pass in :meth:`predict_batch`.
        resize: 'fit' (into ``size``, default) or 'none' (the network sees the image's own size).
        size: the (H, W) geometry for 'fit'; default the preset's crop size (a static graph's input size).
        optimise: run an inference-optimised copy of a PyTorch model (:class:`TorchRunner`; default on).
        max_size: longer side beyond which an image is shrunk first (None: never; see the module docstring).
        precision: 'fp32', or 'bf16' / 'fp16' autocast (PyTorch models only; GPUs gain most).
        compile: run the PyTorch model through ``torch.compile``.
    """

    def __init__(self, model: nn.Module | Runner, *, task: str | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 1, resize: str = "fit", size: tuple[int, int] | None = None,
                 optimise: bool = True, max_size: int | None = MAX_SIZE, precision: str = "fp32",
                 compile: bool = False) -> None:
        if precision not in ("fp32", "bf16", "fp16"):
            raise UserError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
        if isinstance(model, nn.Module):
            self.runner: Runner = TorchRunner(model, task=task, device=device, optimise=optimise,
                                              precision=precision, compile=compile)
        else:
            if precision != "fp32" or compile:
                raise UserError("precision and compile apply to PyTorch models; an exported graph runs as exported")
            self.runner = model
            if task is not None and task != model.task:
                model.config.task(task)                 # a one-line error for a task the model lacks
                raise UserError(f"this exported graph runs the {model.task} task, not {task!r}; export the "
                                f"model again with --task {task}")
        self.config = self.runner.config
        self.task = self.runner.task
        self._decode = get_task(self.task).build_decoder(self.config, self.config.task(self.task))
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if resize not in ("fit", "none"):
            raise UserError(f"resize must be 'fit' or 'none', got {resize!r}")
        fixed = self.runner.fixed_size
        if fixed is not None and (resize != "fit" or (size is not None and tuple(size) != tuple(fixed))):
            raise UserError(f"this exported graph takes exactly {fixed[0]}x{fixed[1]} (HxW) inputs; use resize "
                            "'fit' without another size, or export with --dynamic")
        chosen = tuple(fixed or size or self.config.crop_size)
        if len(chosen) != 2 or min(chosen) < 1:
            raise UserError(f"size must be two positive numbers (H, W), got {chosen}")
        self.size: tuple[int, int] = (int(chosen[0]), int(chosen[1]))
        if max_size is not None and max_size < 33:
            raise UserError(f"max size must be at least 33 pixels, got {max_size}")
        self.batch_size, self.resize, self.max_size = batch_size, resize, max_size
        # predict(..., task=OTHER) on a model with several tasks: a predictor per task on the same runner.
        self._by_task: dict[str, Predictor] = {self.task: self}
        self._options: dict[str, Any] = dict(batch_size=batch_size, resize=resize, size=size, max_size=max_size)

    @classmethod
    def from_pretrained(cls, path: str | Path, **options) -> Predictor:
        """A predictor for a model directory written by ``save_pretrained`` / ``polymax train``, or a Hugging Face
        Hub repo id ``owner/name`` (the ``hub`` extra; see :mod:`polymax.io.hub`)."""
        from polymax.io.pretrained import load_model
        return cls(load_model(path), **options)

    @classmethod
    def from_onnx(cls, path: str | Path, **options) -> Predictor:
        """A predictor running a graph written by ``polymax export onnx`` in onnxruntime (CPU)."""
        from polymax.export.onnx import OnnxRunner
        return cls(OnnxRunner(path), **options)

    def predict(self, image: ImageInput, *, probabilities: bool = False, task: str | None = None) -> Result:
        """One image: a file path, PIL image, numpy array (H, W[, C]) or tensor (C, H, W), RGB 0..255 (see
        :mod:`polymax.inference.images_io` for the accepted formats). Batches go to :meth:`predict_batch`.
        ``task``: another task of the same model (e.g. a OneFormer model's 'semantic', 'instance' or 'panoptic');
        default the predictor's own."""
        arrays = as_arrays(image)
        if len(arrays) != 1:
            raise UserError(f"predict takes one image, got a batch of {len(arrays)}; use predict_batch")
        return self.for_task(task).predict_batch(arrays, probabilities=probabilities)[0]

    def for_task(self, task: str | None) -> Predictor:
        """This predictor for ``task`` of the same model (itself for None or its own task)."""
        if task is None:
            return self
        if task not in self._by_task:
            if isinstance(self.runner, TorchRunner):
                other = Predictor(self.runner.for_task(task), **self._options)
            else:           # an exported graph runs one task: Predictor says so in one line
                other = Predictor(self.runner, task=task, **self._options)
            self._by_task[task] = other
        return self._by_task[task]

    def predict_batch(self, images: Sequence[ImageInput] | np.ndarray | Tensor, *, probabilities: bool = False
                      ) -> list[Result]:
        """Results in input order; up to ``batch_size`` images of equal padded size per forward pass. ``images``:
        a sequence of what :meth:`predict` takes, a (B, H, W, C) array or a (B, C, H, W) tensor."""
        arrays = as_arrays(images)
        plans = [self.geometry(array.shape[:2]) for array in arrays]
        results: list[Result | None] = [None] * len(arrays)
        pending = list(range(len(arrays)))
        while pending:
            network = plans[pending[0]].network
            group = [i for i in pending if plans[i].network == network][: self.batch_size]
            batch = torch.cat([self._prepare(arrays[i], plans[i]) for i in group])
            raw = self.runner(batch)
            for slot, index in enumerate(group):
                results[index] = self._finish(raw, slot, plans[index], probabilities)
            pending = [i for i in pending if i not in group]
        return [result for result in results if result is not None]

    def geometry(self, original: tuple[int, int]) -> Geometry:
        """Where an image of size ``original`` (H, W) goes inside the network's input."""
        original = (int(original[0]), int(original[1]))
        if self.resize == "none":
            content = self._capped(original)
            return Geometry(original, content, padded_size(content))
        scale = min(self.size[0] / original[0], self.size[1] / original[1])
        height, width = (min(max(1, round(n * scale)), limit) for n, limit in zip(original, self.size))
        network = self.runner.fixed_size or padded_size(self.size)
        return Geometry(original, (height, width), (network[0], network[1]))

    def _capped(self, size: tuple[int, int]) -> tuple[int, int]:
        """``size`` shrunk so that its longer side is at most ``max_size`` (aspect ratio kept)."""
        if self.max_size is None or max(size) <= self.max_size:
            return size[0], size[1]
        scale = self.max_size / max(size)
        return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))

    def _prepare(self, array: np.ndarray, plan: Geometry) -> Tensor:
        """(H, W, 3) uint8 or float 0..255 → (1, 3, H_net, W_net) float32: shrunk to ``max_size`` first if larger
        (uint8, antialiased: no full-size float copy), resized into the content box, padded with 127.5."""
        capped = self._capped((array.shape[0], array.shape[1]))
        if capped != tuple(array.shape[:2]):
            array = _shrink(array, capped)
        if not array.flags.writeable:       # torch warns on read-only memory; a uint8 copy is cheap
            array = array.copy()
        image = torch.from_numpy(array).permute(2, 0, 1)[None].float()
        if tuple(image.shape[-2:]) != plan.content:
            image = resize_bilinear(image, plan.content)
        pad_h, pad_w = plan.network[0] - plan.content[0], plan.network[1] - plan.content[1]
        return F.pad(image, (0, pad_w, 0, pad_h), value=PAD_VALUE)

    def _finish(self, raw: TaskOutput, slot: int, plan: Geometry, probabilities: bool) -> Result:
        output = output_slice(raw, slot)
        result = self._decode(output, plan)
        if probabilities:
            result.probabilities = probabilities_at_input(output, plan).cpu().numpy()
            result.clusters = get_task(self.task).cluster_captions(output, self.config)
        return result


def as_arrays(images: object) -> list[np.ndarray]:
    """(H, W, 3) RGB arrays (uint8, or float32 0..255) from one image or a batch: paths, PIL images, numpy
    arrays (H, W[, C]) / (B, H, W, C), tensors (C, H, W) / (B, C, H, W) (uint8 or float 0..255), or lists of them."""
    if isinstance(images, (str, os.PathLike)):
        return [load_rgb(images)]
    if isinstance(images, Tensor):
        tensor = images.detach().cpu()
        if tensor.ndim == 4 or (tensor.ndim == 3 and tensor.shape[0] in (1, 3, 4) and tensor.shape[-1] > 4):
            tensor = tensor.movedim(-3, -1)                 # channels first, as torch images are → channels last
        array = tensor.numpy() if tensor.dtype == torch.uint8 else tensor.float().numpy()
        return as_arrays(list(array) if array.ndim == 4 else array)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [to_rgb(image) for image in images]
    if isinstance(images, (list, tuple)):
        return [array for image in images for array in as_arrays(image)]
    return [to_rgb(images)]  # type: ignore[arg-type]   # to_rgb names any other type in its error


def _shrink(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) → (h, w, 3) smaller, with PIL's antialiased bilinear filter; uint8 stays uint8 (float arrays,
    which already cost a full-size float copy, go through torch's antialiased resize)."""
    if array.dtype == np.uint8:
        return np.array(Image.fromarray(array).resize((size[1], size[0]), Image.Resampling.BILINEAR))   # writable
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    shrunk = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    return shrunk[0].permute(1, 2, 0).contiguous().numpy()
