"""Input conversion and shape checks shared by the streaming metrics.

Every metric's ``update`` accepts torch tensors or numpy arrays; these helpers turn either into the
one kind the metric computes with and raise a ``ValueError`` that names the offending shapes.
"""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(value: torch.Tensor | np.ndarray, *, name: str) -> torch.Tensor:
    """A torch tensor view of ``value`` (no copy for tensors; numpy arrays are shared where possible)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def as_numpy(value: torch.Tensor | np.ndarray, *, name: str) -> np.ndarray:
    """A numpy array of ``value`` (tensors are moved to the CPU first)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def check_rank(shape: tuple[int, ...], *, rank: int, name: str, layout: str) -> None:
    if len(shape) != rank:
        raise ValueError(f"{name} must have shape {layout} (rank {rank}), got shape {tuple(shape)}")


def check_same_shape(pred_shape: tuple[int, ...], target_shape: tuple[int, ...], *, what: str) -> None:
    if tuple(pred_shape) != tuple(target_shape):
        raise ValueError(
            f"{what}: prediction shape {tuple(pred_shape)} does not match target shape {tuple(target_shape)}"
            " (resize the prediction to the ground-truth size first)"
        )


def check_integer(dtype_is_integer: bool, *, name: str, dtype: object) -> None:
    if not dtype_is_integer:
        raise ValueError(f"{name} must hold integer ids, got dtype {dtype}")
