"""Test helper: a model's weights as deeplab2-named arrays, so converter tests need no real checkpoint.

Each converter transform is an element permutation (transpose / reshape / channel re-order), so it is
inverted numerically: apply it to an index array of a candidate TF shape and scatter the weights back.
The result converts back to exactly the model's weights (the candidate shape may differ from the TF one
only where the converter flattens anyway).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from polymax.convert.deeplab2 import _TRUNK_LAYOUTS, class_channel_order, head_mapping
from polymax.convert.deeplab2_trunk import trunk_entries


def _candidate_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    candidates = [shape]
    if len(shape) == 4:
        out, cin, kh, kw = shape
        candidates += [(kh, kw, cin, out), (1, cin, out), (kh, kw, out, cin)]
    if len(shape) == 3:
        candidates += [(shape[1], shape[0]), (1, *shape[:2])]
    if len(shape) == 2:
        candidates += [(1, shape[1], shape[0]), (shape[1], shape[0]), (1, *shape)]
    if len(shape) == 1:
        candidates += [(shape[0] - 1,)]    # semantic logits without a void channel
    return candidates


def _invert(transform, target: np.ndarray) -> np.ndarray:
    for shape in _candidate_shapes(target.shape):
        index = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        try:
            moved = np.asarray(transform(index))
        except (ValueError, IndexError):
            continue
        if moved.shape == target.shape and len(np.unique(moved)) == moved.size == index.size:
            array = np.empty(index.size, dtype=target.dtype)
            array[moved.reshape(-1)] = target.reshape(-1)
            return array.reshape(shape)
    raise AssertionError(f"cannot invert a transform onto shape {target.shape}")


def deeplab2_variables(model: nn.Module) -> dict[str, np.ndarray]:
    """deeplab2 variable name → float32 array that the converter maps back onto ``model``'s weights."""
    info = model.config.dataset
    entries = {key: (name, _TRUNK_LAYOUTS[layout]) for name, key, layout in
               trunk_entries(backbone=model.backbone, pixel_decoder=model.pixel_decoder)}
    entries.update(head_mapping(model, class_channel_order(info.num_classes, info.thing_classes)))
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    return {name: _invert(transform, state[key]).astype(np.float32) for key, (name, transform) in entries.items()}
