"""Test-time protocol for the dense tasks (conventions note §1.4, §2; DESIGN §6): the model's output brought onto
the ground truth's pixel grid, optionally averaged with the horizontally flipped image's, and finished.

    model(images, task=…) → the task's final output at the padded model resolution (stride 4)
      → the task's ``tta_values``: e.g. semantic class probabilities softmax_K(mask_logits) (B, C, h, w), depth
        (B, 1, h, w) metres, unit normals (B, 3, h, w)
      → resize onto the input image (bilinear with align_corners to the padded size, padding cropped;
        :func:`polymax.geometry.resize_to_input`)
      → with ``flip=True``: the same for the flipped image, flipped back by the task's ``flip_back`` (normals:
        n_x negated), averaged
      → resize to the ground-truth size (bilinear, align_corners=True) if it differs from the input's
      → the task's ``finish_tta`` (normals renormalised; depth clamped to the task's range, NaN → min, +inf → max)

The flip is undone *after* the padding is cropped: the model pads at the right, so a prediction of the flipped
image is only the mirror of the original's on the input's own pixels. Averaging happens at input resolution,
which makes the result exactly flip-equivariant: predict(flip(x)) = flip(predict(x)) for any model.
Semantic maps come from :func:`semantic_labels` (argmax over the averaged probabilities).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polymax.config.model import TaskConfig
from polymax.geometry import resize_bilinear, resize_to_input
from polymax.tasks import get_task


def _on_input(model: nn.Module, images: Tensor, task: str) -> Tensor:
    """The task's TTA map of ``model(images)`` on the input's H × W (padding cropped)."""
    definition = get_task(task)
    values = definition.tta_values(model(images, task=task)[task].final)
    return resize_to_input(values, tuple(images.shape[-2:]))


@torch.no_grad()
def predict_dense(model: nn.Module, images: Tensor, *, task: str, flip: bool = False,
                  output_size: tuple[int, int] | None = None, task_config: TaskConfig | None = None) -> Tensor:
    """The evaluation-ready map of ``task`` for ``images`` (B, 3, H, W), RGB 0..255.

    Args:
        model: a PolyMaX or baseline model (``model(images, task=…) -> ModelOutput``); call ``model.eval()`` first.
        task: a task with a flip rule — 'semantic' (→ class probabilities (B, C, H', W')), 'depth' (→ metres
            (B, 1, H', W')) or 'normals' (→ unit vectors (B, 3, H', W')).
        flip: average with the prediction of the horizontally flipped images (flip TTA).
        output_size: the ground truth's (H', W'); default the input's (H, W).
        task_config: the settings the finishing step reads (the depth range); default the model's own.
    """
    definition = get_task(task)
    if task_config is None:
        config = getattr(model, "config", None)
        task_config = config.task(task) if config is not None else TaskConfig(name=task)
    values = _on_input(model, images, task)
    if flip:
        mirrored = definition.flip_back(_on_input(model, images.flip(-1), task))
        values = 0.5 * (values + mirrored)
    values = resize_bilinear(values, tuple(output_size or images.shape[-2:]))
    return definition.finish_tta(values, task_config)


def semantic_labels(probabilities: Tensor) -> Tensor:
    """(B, C, H, W) class probabilities → (B, H, W) int64 class ids (argmax)."""
    return probabilities.argmax(dim=1)
