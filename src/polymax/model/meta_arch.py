"""kMaX-DeepLab / PolyMaX composition root: image → ModelOutput.

    images (B, 3, H, W) RGB 0..255, any H, W
      → x/127.5 − 1, pad bottom/right to (32k+1)² with 0 (= pixel 127.5, as deeplab2's preprocessing)
      → backbone → Features → pixel_decoder → PixelFeatures                                     (the trunk, once)
      → kmax_decoder → ClusterCentres, once per query group (a task's own K centres, or the shared group)
      → mask_head (final) → heads[task] → TaskOutput (+ one per kMaX layer)        → ModelOutput[task]: TaskRun

Outputs live at the *padded model resolution*: a map at stride s has (H_pad − 1)/s + 1 rows, with
H_pad = 32·⌈(H − 1)/32⌉ + 1. Auxiliary predictions stay at their kMaX layer's own stride (32, 16, 8).
:func:`polymax.geometry.resize_to_input` maps any such output back onto the input's H × W.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.errors import UserError
from polymax.geometry import padded_size
from polymax.model.layers.group_statistics import drop_group_statistics, split_statistics, use_statistics
from polymax.structures import ModelOutput, TaskRun


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
    if _values_unavailable(images):
        return
    low, high = torch.aminmax(images.detach())   # one pass; NaN propagates into both
    check_value_range(float(low), float(high))


# Values further than this outside 0..255 are no photo (and overflow the network to NaN long before float32's
# limit): an error. Nearer misses, and 0..1 floats, run with a warning.
FAR_OUTSIDE = 1e4


def check_value_range(low: float, high: float) -> None:
    """Error for non-finite or absurd pixel values, warning for 0..1 floats or values a little off 0..255."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError("images contain NaN or infinite values; pass RGB values in 0..255")
    if low < -FAR_OUTSIDE or high > 255 + FAR_OUTSIDE:
        raise UserError(f"image values span {low:.3g}..{high:.3g}; the model expects RGB values in 0..255")
    if low >= 0 and 0 < high <= 1:
        warnings.warn(f"image values span {low:.3g}..{high:.3g}, as if scaled to 0..1; the model expects RGB "
                      "0..255 (multiply by 255)", UserWarning, stacklevel=3)
    elif low < -1 or high > 256:
        warnings.warn(f"image values span {low:.3g}..{high:.3g}; the model expects RGB 0..255", UserWarning,
                      stacklevel=3)


def preprocess(images: Tensor) -> Tensor:
    """(B, 3, H, W) 0..255 → normalised (B, 3, H_pad, W_pad), padding = 0 (pixel value 127.5)."""
    check_images(images)
    height, width = images.shape[-2:]
    pad_h, pad_w = padded_size((height, width))
    x = images / 127.5 - 1.0
    if (pad_h, pad_w) != (height, width):
        x = F.pad(x, (0, pad_w - width, 0, pad_h - height), value=0.0)
    return x


class KMaX(nn.Module):
    """The full model: a trunk (``backbone``, ``pixel_decoder``, ``kmax_decoder``, ``mask_head``) and one head per
    task in ``heads``; for training only, ``semantic_branch`` (None when no task asks for it).

    ``config`` is the complete ModelConfig the model was built from (saved with the weights; the model reads
    nothing from it). ``semantic_tasks``: the tasks whose runs carry the auxiliary semantic logits.
    """

    def __init__(self, *, backbone: nn.Module, pixel_decoder: nn.Module, kmax_decoder: nn.Module,
                 mask_head: nn.Module, heads: dict[str, nn.Module], semantic_branch: nn.Module | None = None,
                 semantic_tasks: Sequence[str] = (), config=None) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a model needs at least one task head")
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.kmax_decoder = kmax_decoder
        self.mask_head = mask_head
        self.heads = nn.ModuleDict(heads)
        self.semantic_branch = semantic_branch
        self.semantic_tasks = tuple(semantic_tasks)
        self.config = config
        # Several query groups share the decoder's BatchNorms: each keeps its own population statistics, except
        # the modules that read only the pixels (the same input for every group, computed once per image).
        groups = getattr(kmax_decoder, "query_groups", ())
        if len(groups) > 1:
            shared = (*kmax_decoder.pixel_modules(), mask_head.pixel_head)
            split_statistics(kmax_decoder, groups, shared=shared)
            split_statistics(mask_head, groups, shared=shared)
            names = {id(module): name for name, module in self.named_modules()}
            self._shared_norms = tuple(names[id(m)] for owner in shared for m in owner.modules()
                                       if isinstance(m, nn.modules.batchnorm._BatchNorm))
            self._register_load_state_dict_pre_hook(self._drop_shared_group_statistics)

    def _drop_shared_group_statistics(self, state_dict: dict, prefix: str, *_) -> None:
        """Load hook (a method, so that the model still pickles): a folder saved while the pixel readers kept
        statistics per query group loads with their first group's."""
        drop_group_statistics(state_dict, prefix, self._shared_norms, self.kmax_decoder.query_groups)

    def _use_group(self, task: str | None) -> None:
        """Before a decoder pass: the decoder's and mask head's BatchNorms use ``task``'s query group."""
        if len(getattr(self.kmax_decoder, "query_groups", ())) > 1:
            group = self.kmax_decoder.group_of(task)
            use_statistics(self.kmax_decoder, group)
            use_statistics(self.mask_head, group)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task names this model can run, in order."""
        return tuple(self.heads)

    preprocess = staticmethod(preprocess)

    def forward(self, images: Tensor, task: str | Sequence[str] | None = None, *,
                sample_tasks: Sequence[str] | None = None) -> ModelOutput:
        """Run ``task`` (a name, several names sharing one trunk pass, or None for the model's only task) at the
        padded model resolution; ``semantic_logits`` only in training mode. ``sample_tasks`` (one name per image):
        a mixed-task batch of a OneFormer model, one pass with each image under its own task prompt; each task's
        run then holds its images (``TaskRun.samples``). With both, the ``task`` names also run on every image
        (training with ``task_sampling='shared'``)."""
        if sample_tasks is not None:
            every_image = () if task is None else resolve_tasks(self.tasks, task)
            return self._run_mixed(images, tuple(sample_tasks), with_semantic=self.training, every_image=every_image)
        return self._run(images, resolve_tasks(self.tasks, task), with_semantic=self.training)

    def forward_with_semantic(self, images: Tensor, task: str | None = None) -> ModelOutput:
        """Like ``forward`` but also runs the training-only semantic branch (e.g. for parity checks)."""
        if self.semantic_branch is None:
            raise UserError("this model has no auxiliary semantic branch")
        return self._run(images, resolve_tasks(self.tasks, task), with_semantic=True)

    def _run(self, images: Tensor, tasks: tuple[str, ...], *, with_semantic: bool) -> ModelOutput:
        features = self.backbone(self.preprocess(images))
        pixels = self.pixel_decoder(features)
        semantic = None
        if with_semantic and self.semantic_branch is not None and set(tasks) & set(self.semantic_tasks):
            semantic = self.semantic_branch(features)
        return self._decode(pixels, tasks, semantic=semantic)

    def _run_per_task(self, pixels, sample_tasks: tuple[str, ...], names: tuple[str, ...], *,
                      semantic: Tensor | None) -> ModelOutput:
        """A mixed-task batch whose tasks cannot share one decoder pass (query groups of their own): each task's
        cluster-decoder pass and head run on its images only (the trunk ran once on the whole batch)."""
        runs = {}
        for task in names:
            index = torch.tensor([b for b, name in enumerate(sample_tasks) if name == task],
                                 device=pixels.high_res.device)
            run = self._decode(select_samples(pixels, index), (task,),
                               semantic=None if semantic is None else semantic[index]).runs[task]
            run.samples = index
            runs[task] = run
        return ModelOutput(runs)

    def _decode(self, pixels, tasks: tuple[str, ...], *, semantic: Tensor | None, reads=None,
                embeddings: Tensor | None = None) -> ModelOutput:
        """The cluster decoder, mask head and task heads on the trunk's PixelFeatures, one pass per query group.
        ``reads`` / ``embeddings``: the decoder's and the mask head's read of these pixels, when computed already."""
        passes = {}    # one cluster-decoder pass per query group (and per task when the centres depend on it)
        runs = {}
        # What the decoder layers and the mask head read from the pixels does not depend on the centres: read once,
        # shared by every pass.
        reads = self.kmax_decoder.read_pixels(pixels) if reads is None else reads
        embeddings = self.mask_head.embed(pixels.high_res) if embeddings is None else embeddings
        for task in tasks:
            key = self.kmax_decoder.pass_key(task)
            if key not in passes:
                self._use_group(task)
                centres = self.kmax_decoder(pixels, task=task, reads=reads)
                final = self.mask_head(pixels.high_res, centres.mask_embeddings, centres.class_embeddings,
                                       pixel_features=embeddings)
                passes[key] = (final, centres.layers, centres.task_queries)
            final, layers, task_queries = passes[key]
            head = self.heads[task]
            runs[task] = TaskRun(task=task, final=head(final, len(layers)),
                                 aux=[head(layer, index) for index, layer in enumerate(layers)],
                                 semantic_logits=semantic if task in self.semantic_tasks else None,
                                 task_queries=task_queries)
        return ModelOutput(runs)

    def _run_mixed(self, images: Tensor, sample_tasks: tuple[str, ...], *, with_semantic: bool,
                   every_image: tuple[str, ...] = ()) -> ModelOutput:
        names = resolve_tasks(self.tasks, tuple(dict.fromkeys(sample_tasks)))
        if set(names) & set(every_image):
            raise ValueError(f"tasks {sorted(set(names) & set(every_image))} are both drawn per image and run on all")
        features = self.backbone(self.preprocess(images))
        pixels = self.pixel_decoder(features)
        semantic = None
        if with_semantic and self.semantic_branch is not None and set(names + every_image) & set(self.semantic_tasks):
            semantic = self.semantic_branch(features)
        if not self.kmax_decoder.batches_mixed_tasks(names):
            runs = dict(self._decode(pixels, every_image, semantic=semantic).runs) if every_image else {}
            return ModelOutput({**runs, **self._run_per_task(pixels, sample_tasks, names, semantic=semantic).runs})
        reads = self.kmax_decoder.read_pixels(pixels)                   # one read for every pass (see _decode)
        embeddings = self.mask_head.embed(pixels.high_res)
        runs = dict(self._decode(pixels, every_image, semantic=semantic, reads=reads, embeddings=embeddings).runs
                    if every_image else {})
        self._use_group(None)                                           # mixed batches run the shared group
        centres = self.kmax_decoder(pixels, task=sample_tasks, reads=reads)   # each image under its own prompt
        final = self.mask_head(pixels.high_res, centres.mask_embeddings, centres.class_embeddings,
                               pixel_features=embeddings)
        for task in names:
            index = torch.tensor([b for b, name in enumerate(sample_tasks) if name == task], device=images.device)
            head = self.heads[task]
            runs[task] = TaskRun(task=task, final=head(select_samples(final, index), len(centres.layers)),
                                 aux=[head(select_samples(layer, index), i) for i, layer in enumerate(centres.layers)],
                                 semantic_logits=semantic[index] if semantic is not None and
                                 task in self.semantic_tasks else None,
                                 task_queries=None if centres.task_queries is None else centres.task_queries[index],
                                 samples=index)
        return ModelOutput(runs)


def select_samples(value, index: Tensor):
    """A dataclass of batched tensors (MaskPrediction, TaskOutput) with every tensor field cut to ``index``."""
    return type(value)(**{item.name: getattr(value, item.name)[index]
                          if isinstance(getattr(value, item.name), Tensor) else getattr(value, item.name)
                          for item in fields(value)})


def resolve_tasks(available: tuple[str, ...], task: str | Sequence[str] | None) -> tuple[str, ...]:
    """The task names to run: ``task`` checked against ``available``; None means the only one."""
    if task is None:
        if len(available) != 1:
            raise UserError(f"this model has tasks {list(available)}; pass task=NAME (--task NAME) to choose one")
        return available
    names = (task,) if isinstance(task, str) else tuple(task)
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        raise UserError(f"unknown task {unknown[0] if unknown else None!r}; this model has {list(available)}")
    return names
