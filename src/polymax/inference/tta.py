"""Test-time protocol for the dense tasks (conventions note §1.4, §2; DESIGN §6): the model's output brought onto
the ground truth's pixel grid, optionally averaged with the horizontally flipped image's, and clamped.

    model(images) → Prediction at the padded model resolution (stride 4)
      → :func:`dense_output`: the task's map — semantic class probabilities softmax_K(mask_logits) (B, C, h, w),
        depth (B, 1, h, w) metres, or unit normals (B, 3, h, w)
      → resize onto the input image (bilinear with align_corners to the padded size, padding cropped;
        :func:`polymax.model.meta_arch.resize_to_input`)
      → with ``flip=True``: the same for the flipped image, flipped back (normals: n_x negated), averaged
      → resize to the ground-truth size (bilinear, align_corners=True) if it differs from the input's
      → normals renormalised; depth clamped to [min_depth, max_depth] (NaN → min, +inf → max)

The flip is undone *after* the padding is cropped: the model pads at the right, so a prediction of the flipped
image is only the mirror of the original's on the input's own pixels. Averaging happens at input resolution,
which makes the result exactly flip-equivariant: predict(flip(x)) = flip(predict(x)) for any model.
Semantic maps come from :func:`semantic_labels` (argmax over the averaged probabilities).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.geometry import resize_bilinear
from polymax.model.meta_arch import resize_to_input
from polymax.structures import Prediction

TASKS = ("semantic", "depth", "normals")


def flip_horizontal(maps: Tensor) -> Tensor:
    """Mirror (…, H, W) maps left ↔ right."""
    return maps.flip(-1)


def flip_normals(normals: Tensor) -> Tensor:
    """Mirror a (B, 3, H, W) normal map: the image flips and each vector's x component changes sign."""
    sign = normals.new_tensor([-1.0, 1.0, 1.0]).view(1, 3, 1, 1)
    return flip_horizontal(normals) * sign


def normalise(normals: Tensor) -> Tensor:
    """(B, 3, H, W) → unit vectors (a zero vector stays zero)."""
    return F.normalize(normals, dim=1, eps=1e-12)


def clamp_depth(depth: Tensor, min_depth: float, max_depth: float) -> Tensor:
    """Clamp to [min_depth, max_depth]; NaN → min_depth, +inf → max_depth, −inf → min_depth."""
    depth = torch.nan_to_num(depth, nan=min_depth, posinf=max_depth, neginf=min_depth)
    return depth.clamp(min_depth, max_depth)


def dense_output(prediction: Prediction, task: str) -> Tensor:
    """The task's per-pixel answer at model resolution: semantic probabilities (B, C, h, w) (softmax over the
    K = C clusters, or over the baseline's class logits), depth (B, 1, h, w) or normals (B, 3, h, w)."""
    if task == "semantic":
        return torch.softmax(prediction.mask_logits.float(), dim=1)
    if task == "depth":
        if prediction.depth is None:
            raise ValueError("the prediction has no depth; is this a depth model?")
        return prediction.depth.float()
    if task == "normals":
        if prediction.normals is None:
            raise ValueError("the prediction has no normals; is this a normals model?")
        return prediction.normals.float()
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _on_input(model: nn.Module, images: Tensor, task: str) -> Tensor:
    """The task's map of ``model(images)`` on the input's H × W (padding cropped)."""
    values = resize_to_input(dense_output(model(images), task), tuple(images.shape[-2:]))
    return normalise(values) if task == "normals" else values


@torch.no_grad()
def predict_dense(model: nn.Module, images: Tensor, *, task: str, flip: bool = False,
                  output_size: tuple[int, int] | None = None, min_depth: float | None = None,
                  max_depth: float | None = None) -> Tensor:
    """The evaluation-ready map of ``task`` for ``images`` (B, 3, H, W), RGB 0..255.

    Args:
        model: a PolyMaX or baseline model (``model(images) -> Prediction``); call ``model.eval()`` first.
        task: 'semantic' (→ class probabilities (B, C, H', W')), 'depth' (→ metres (B, 1, H', W')) or
            'normals' (→ unit vectors (B, 3, H', W')).
        flip: average with the prediction of the horizontally flipped images (flip TTA).
        output_size: the ground truth's (H', W'); default the input's (H, W).
        min_depth, max_depth: depth clamp range (both or neither; depth only).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    values = _on_input(model, images, task)
    if flip:
        mirrored = _on_input(model, flip_horizontal(images), task)
        mirrored = flip_normals(mirrored) if task == "normals" else flip_horizontal(mirrored)
        values = 0.5 * (values + mirrored)
    values = resize_bilinear(values, tuple(output_size or images.shape[-2:]))
    if task == "normals":
        values = normalise(values)
    if task == "depth" and (min_depth is not None or max_depth is not None):
        if min_depth is None or max_depth is None:
            raise ValueError("pass both min_depth and max_depth to clamp the depth")
        values = clamp_depth(values, min_depth, max_depth)
    return values


def semantic_labels(probabilities: Tensor) -> Tensor:
    """(B, C, H, W) class probabilities → (B, H, W) int64 class ids (argmax)."""
    return probabilities.argmax(dim=1)

