"""Inference for users: image in, typed maps at the image's own resolution out.

    predictor = Predictor.from_pretrained("my_model")          # or Predictor(model), Predictor.from_onnx(file)
    result = predictor.predict("room.jpg")                     # a path, PIL image, numpy array or tensor, any size
    results = predictor.predict_batch(["a.jpg", "b.jpg"])      # or a (B, 3, H, W) tensor / (B, H, W, 3) array
    result.task, result.size                                   # the task's typed result (polymax.structures):
    result.semantic, result.panoptic, result.segments          #   SegmentationResult (panoptic / semantic / instance)
    result.depth                                               #   DepthResult
    result.normals                                             #   NormalsResult

A model with several tasks runs the one named by ``task=`` (``--task`` on the command line). ``task="all"`` or a
tuple of names (``predict(image, task=("depth", "normals"))``, or ``Predictor(model, task="all")`` as the default)
gives a :class:`~polymax.structures.MultiTaskResult` (task → Result, in the model's task order) from ONE model call
per batch: the backbone and pixel decoder run once for all the tasks (PyTorch models only; an exported graph holds
one task).

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
differ go in separate passes, so every result equals the one-image result (no extra padding). The input side is
a separate, picklable step: ``predictor.prepare(array)`` (or ``predictor.preprocess``, a :class:`Preprocess`, in
DataLoader workers, as ``polymax predict`` runs it) gives a :class:`PreparedImage`, and ``predict_prepared`` runs
the model on a list of them.

Memory: an image whose longer side exceeds ``max_size`` (default 2048) is first shrunk to it, in uint8 with an
antialiasing filter, before any float copy exists; the network then sees the geometry above and the results are
still mapped back to the image's full size. So a 12-megapixel photo costs what a 2048-pixel one does, plus the
full-size result maps (e.g. 4000 × 3000: int64 panoptic ids 96 MB, int32 classes 48 MB).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from polymax.config.model import ModelConfig
from polymax.errors import UserError
from polymax.geometry import Geometry, padded_size, resize_bilinear
from polymax.inference.images_io import load_rgb, to_rgb
from polymax.inference.runner import Runner, TaskInputRunner, TorchRunner
from polymax.structures import MultiTaskResult, Result, TaskOutput
from polymax.tasks import get_task
from polymax.tasks.base import output_slice, probabilities_at_input

# One image as the Predictor takes it (see as_arrays).
ImageInput = str | os.PathLike | Image.Image | np.ndarray | Tensor
PAD_VALUE = 127.5  # pixel value that the model's normalisation maps to 0
MAX_SIZE = 2048    # longer side beyond which an image is shrunk (uint8) before anything else
ALL_TASKS = "all"  # task= keyword: every task of the model
# task= for several tasks at once: "all" or the names (a tuple or list).
SeveralTasks = Literal["all"] | tuple[str, ...] | list[str]
Answer = TypeVar("Answer", Result, MultiTaskResult)


class Predictor:
    """Turns images into the task's :class:`~polymax.structures.Result`; see the module docstring for the geometry.

    Args:
        model: a polymax model (``nn.Module`` with ``.config``) or a :class:`~polymax.inference.runner.Runner`
            (e.g. ONNX).
        task: the task to run (None = the model's only task; a one-line error listing the choices otherwise);
            "all" or a tuple of names: those tasks, one model call per batch, each image's answer a MultiTaskResult.
        device: cpu, cuda, cuda:N or auto (PyTorch models only).
        batch_size: images per forward pass in :meth:`predict_batch`.
        resize: 'fit' (into ``size``, default) or 'none' (the network sees the image's own size).
        size: the (H, W) geometry for 'fit'; default the preset's crop size (a static graph's input size).
        optimise: run an inference-optimised copy of a PyTorch model (:class:`TorchRunner`; default on).
        max_size: longer side beyond which an image is shrunk first (None: never; see the module docstring).
        precision: 'fp32', or 'bf16' / 'fp16' autocast (PyTorch models only; GPUs gain most).
        compile: run the PyTorch model through ``torch.compile``.
    """

    def __init__(self, model: nn.Module | Runner, *, task: str | Sequence[str] | None = None,
                 device: str | torch.device = "cpu",
                 batch_size: int = 1, resize: str = "fit", size: tuple[int, int] | None = None,
                 optimise: bool = True, max_size: int | None = MAX_SIZE, precision: str = "fp32",
                 compile: bool = False) -> None:
        if precision not in ("fp32", "bf16", "fp16"):
            raise UserError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
        several = _several(task)
        one_task = task if isinstance(task, str) and not several else None
        if isinstance(model, nn.Module):
            config = getattr(model, "config", None)
            if several and isinstance(config, ModelConfig):    # the runner's own task: the first one asked for
                one_task = select_tasks(config, task)[0]
            self.runner: Runner = TorchRunner(model, task=one_task, device=device, optimise=optimise,
                                              precision=precision, compile=compile)
        else:
            if precision != "fp32" or compile:
                raise UserError("precision and compile apply to PyTorch models; an exported graph runs as exported")
            if isinstance(model, TaskInputRunner) and one_task in model.tasks:
                model = model.for_task(one_task)        # a graph with a task input: the task asked for
            self.runner = model
            if several:
                raise UserError(_one_task_per_graph(model.task))
            if one_task is not None and one_task != model.task:
                model.config.task(one_task)             # a one-line error for a task the model lacks
                raise UserError(f"this exported graph runs the {model.task} task, not {one_task!r}; export the "
                                f"model again with --task {one_task}")
        self.config = self.runner.config
        self.task = self.runner.task
        # The tasks predict runs by default when several were asked for (None: the one task ``self.task``).
        self.tasks: tuple[str, ...] | None = select_tasks(self.config, task) if several else None
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
        fixed_size = None if fixed is None else (int(fixed[0]), int(fixed[1]))
        self.preprocess = Preprocess(size=self.size, resize=resize, max_size=max_size, fixed_size=fixed_size)
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
        task = options.get("task")      # a graph with a task input needs the task (its one-line error otherwise)
        return cls(OnnxRunner(path, task=task if isinstance(task, str) and not _several(task) else None), **options)

    @overload
    def predict(self, image: ImageInput, *, probabilities: bool = False, task: SeveralTasks) -> MultiTaskResult: ...
    @overload
    def predict(self, image: ImageInput, *, probabilities: bool = False, task: str | Sequence[str] | None = None
                ) -> Result | MultiTaskResult: ...

    def predict(self, image: ImageInput, *, probabilities: bool = False, task: str | Sequence[str] | None = None
                ) -> Result | MultiTaskResult:
        """One image: a file path, PIL image, numpy array (H, W[, C]) or tensor (C, H, W), RGB 0..255 (see
        :mod:`polymax.inference.images_io` for the accepted formats). Batches go to :meth:`predict_batch`.
        ``task``: another task of the same model (e.g. a OneFormer model's 'semantic', 'instance' or 'panoptic');
        "all" or a tuple of names for a :class:`MultiTaskResult` from one model call; default the predictor's own
        task (or tasks)."""
        arrays = as_arrays(image)
        if len(arrays) != 1:
            raise UserError(f"predict takes one image, got a batch of {len(arrays)}; use predict_batch")
        return self.predict_batch(arrays, probabilities=probabilities, task=task)[0]

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

    @overload
    def predict_batch(self, images: Sequence[ImageInput] | np.ndarray | Tensor, *, probabilities: bool = False,
                      task: SeveralTasks) -> list[MultiTaskResult]: ...
    @overload
    def predict_batch(self, images: Sequence[ImageInput] | np.ndarray | Tensor, *, probabilities: bool = False,
                      task: str | Sequence[str] | None = None) -> list[Result] | list[MultiTaskResult]: ...

    def predict_batch(self, images: Sequence[ImageInput] | np.ndarray | Tensor, *, probabilities: bool = False,
                      task: str | Sequence[str] | None = None) -> list[Result] | list[MultiTaskResult]:
        """Results in input order; up to ``batch_size`` images of equal padded size per forward pass. ``images``:
        a sequence of what :meth:`predict` takes, a (B, H, W, C) array or a (B, C, H, W) tensor. ``task`` as in
        :meth:`predict`: several tasks give one :class:`MultiTaskResult` per image, one model call per batch."""
        return self.predict_prepared([self.prepare(array) for array in as_arrays(images)],
                                     probabilities=probabilities, task=task)

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """One (H, W, 3) RGB array → the network's input and its geometry (:class:`Preprocess`, which DataLoader
        workers can run without the model)."""
        return self.preprocess(image)

    def predict_prepared(self, images: Sequence[PreparedImage], *, probabilities: bool = False,
                         task: str | Sequence[str] | None = None) -> list[Result] | list[MultiTaskResult]:
        """:meth:`predict_batch` on inputs already prepared by :meth:`prepare` (or a :class:`Preprocess` of this
        predictor's ``preprocess``, e.g. in a DataLoader worker); results in input order."""
        chosen = self._selection(task)
        if isinstance(chosen, str):
            one = self.for_task(chosen)

            def run_one(batch: Tensor, plans: list[Geometry]) -> list[Result]:
                raw = one.runner(batch)
                return [one._finish(raw, slot, plan, probabilities) for slot, plan in enumerate(plans)]

            return one._in_batches(images, run_one)
        predictors = {name: self.for_task(name) for name in chosen}
        runner = self.runner
        assert isinstance(runner, TorchRunner)      # _selection refused several tasks on an exported graph

        def run_all(batch: Tensor, plans: list[Geometry]) -> list[MultiTaskResult]:
            outputs = runner.run_tasks(batch, chosen)      # one model call: the trunk is shared by every task
            return [MultiTaskResult({name: predictors[name]._finish(outputs[name], slot, plan, probabilities)
                                     for name in chosen}) for slot, plan in enumerate(plans)]

        return self._in_batches(images, run_all)

    def _selection(self, task: str | Sequence[str] | None) -> str | tuple[str, ...]:
        """What ``task=`` asks for: one task name, or the tuple of several in the model's order."""
        if task is None:
            return self.tasks if self.tasks is not None else self.task
        if not _several(task):
            return str(task)
        if not isinstance(self.runner, TorchRunner):
            raise UserError(_one_task_per_graph(self.task))
        return select_tasks(self.config, task)

    def _in_batches(self, images: Sequence[PreparedImage],
                    run: Callable[[Tensor, list[Geometry]], list[Answer]]) -> list[Answer]:
        """``run`` (a batch, its images' geometries → one answer per image) on groups of up to ``batch_size``
        images of equal padded size; the answers in input order."""
        answers: list[Answer | None] = [None] * len(images)
        pending = list(range(len(images)))
        while pending:
            network = images[pending[0]].geometry.network
            group = [i for i in pending if images[i].geometry.network == network][: self.batch_size]
            batch = torch.cat([images[i].image for i in group])
            for index, answer in zip(group, run(batch, [images[i].geometry for i in group])):
                answers[index] = answer
            pending = [i for i in pending if i not in group]
        return [answer for answer in answers if answer is not None]

    def geometry(self, original: tuple[int, int]) -> Geometry:
        """Where an image of size ``original`` (H, W) goes inside the network's input."""
        return self.preprocess.geometry(original)

    def _finish(self, raw: TaskOutput, slot: int, plan: Geometry, probabilities: bool) -> Result:
        output = output_slice(raw, slot)
        result = self._decode(output, plan)
        if probabilities:
            result.probabilities = probabilities_at_input(output, plan).cpu().numpy()
            result.clusters = get_task(self.task).cluster_captions(output, self.config)
        return result



@dataclass(frozen=True)
class PreparedImage:
    """One image as the network takes it: (1, 3, H_net, W_net) float32, and where the image lies in it."""

    image: Tensor
    geometry: Geometry


@dataclass(frozen=True)
class Preprocess:
    """The predictor's input geometry (module docstring) without the model: small and picklable, so DataLoader
    workers decode and prepare images while the model runs. ``size``: the (H, W) geometry of 'fit';
    ``fixed_size``: a static graph's input size (None: padded to 32k+1)."""

    size: tuple[int, int]
    resize: str = "fit"
    max_size: int | None = MAX_SIZE
    fixed_size: tuple[int, int] | None = None

    def __call__(self, array: np.ndarray) -> PreparedImage:
        """(H, W, 3) uint8 or float 0..255 → the network's input: shrunk to ``max_size`` first if larger (uint8,
        antialiased: no full-size float copy), resized into the content box, padded with 127.5."""
        plan = self.geometry(array.shape[:2])
        capped = self.capped((array.shape[0], array.shape[1]))
        if capped != tuple(array.shape[:2]):
            array = _shrink(array, capped)
        if not array.flags.writeable:       # torch warns on read-only memory; a uint8 copy is cheap
            array = array.copy()
        image = torch.from_numpy(array).permute(2, 0, 1)[None].float()
        if tuple(image.shape[-2:]) != plan.content:
            image = resize_bilinear(image, plan.content)
        pad_h, pad_w = plan.network[0] - plan.content[0], plan.network[1] - plan.content[1]
        return PreparedImage(F.pad(image, (0, pad_w, 0, pad_h), value=PAD_VALUE), plan)

    def geometry(self, original: tuple[int, int]) -> Geometry:
        """Where an image of size ``original`` (H, W) goes inside the network's input."""
        original = (int(original[0]), int(original[1]))
        if self.resize == "none":
            content = self.capped(original)
            return Geometry(original, content, padded_size(content))
        scale = min(self.size[0] / original[0], self.size[1] / original[1])
        height, width = (min(max(1, round(n * scale)), limit) for n, limit in zip(original, self.size))
        network = self.fixed_size or padded_size(self.size)
        return Geometry(original, (height, width), (network[0], network[1]))

    def capped(self, size: tuple[int, int]) -> tuple[int, int]:
        """``size`` shrunk so that its longer side is at most ``max_size`` (aspect ratio kept)."""
        if self.max_size is None or max(size) <= self.max_size:
            return size[0], size[1]
        scale = self.max_size / max(size)
        return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _several(task: object) -> bool:
    """True when ``task=`` asks for several tasks: "all", or a tuple / list of names (even of one)."""
    return task == ALL_TASKS or isinstance(task, (tuple, list))


def select_tasks(config: ModelConfig, task: str | Sequence[str] | None) -> tuple[str, ...]:
    """The tasks ``task`` ("all" or names) names, in the model's task order; a one-line error naming the model's
    tasks for an unknown one."""
    wanted = config.task_names if task == ALL_TASKS else tuple(dict.fromkeys([task] if isinstance(task, str)
                                                                               else task or ()))
    if not wanted:
        raise UserError(f"no task named; choose from {list(config.task_names)} or 'all'")
    for name in wanted:
        config.task(name)       # the one-line error for a task the model lacks
    return tuple(name for name in config.task_names if name in wanted)


def _one_task_per_graph(task: str) -> str:
    return (f"an exported graph runs one task ({task}), not several at once; predict with the PyTorch model "
            "(--model DIR) for --task all, or export one graph per task (polymax export onnx --task NAME)")


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
