"""Model size and cost, measured on the model itself.

* :func:`count_parameters` — trainable parameters; ``inference=True`` leaves out the training-only
  auxiliary semantic branch (the number papers report).
* :func:`count_flops` — FLOPs *counted* while running one forward pass (``torch.utils.flop_counter``:
  2 FLOPs per multiply-add of every convolution, matmul, einsum and attention op; element-wise ops are not
  counted). Papers that report fvcore "FLOPs" report multiply-adds, i.e. half of this number. The fused
  oneDNN convolutions of ``polymax.inference.fuse`` are counted like the convolutions they replace
  (:func:`flop_counter`).
* :func:`count_preset_parameters` — parameters of a preset without allocating its weights (meta device).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from polymax.config.model import ModelConfig


def count_parameters(model: nn.Module, inference: bool = True) -> int:
    """Number of trainable parameters; with ``inference`` the semantic branch is excluded."""
    skip = set()
    branch = getattr(model, "semantic_branch", None)
    if inference and branch is not None:
        skip = {id(p) for p in branch.parameters()}
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in skip)


def _fused_conv_flops(x_shape, second, third, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's fused convolution: (X, W, B, …) or, with a residual, (X, residual, W, B, …)."""
    with_residual = third is not None and len(third) == len(x_shape)
    return conv_flop_count(x_shape, third if with_residual else second, out_shape)


def flop_counter() -> FlopCounterMode:
    """torch's FlopCounterMode (no display) that also counts the fused oneDNN convolutions."""
    mapping = {}
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
        mapping = {torch.ops.mkldnn._convolution_pointwise: _fused_conv_flops}     # keyed by overload packet
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_flops(model: nn.Module, image_size: tuple[int, int], *, batch: int = 1,
                task: str | Sequence[str] | None = None) -> int:
    """FLOPs of one inference forward pass on (batch, 3, H, W) images (counted, not estimated).

    ``task``: the task(s) to run (default: every task of the model, on one trunk pass, as training runs them).
    The model runs in eval mode (restored afterwards), on its own device, without gradients.
    """
    parameters = list(model.parameters())
    images = torch.full((batch, 3, *image_size), 127.5, device=parameters[0].device, dtype=parameters[0].dtype)
    was_training, needs_grad = model.training, [p.requires_grad for p in parameters]
    # Frozen parameters instead of torch.no_grad(): the counter's module tracker fails on views of
    # parameters taken under no_grad (they report requires_grad without a grad_fn).
    model.eval()
    for p in parameters:
        p.requires_grad_(False)
    try:
        with flop_counter() as counter:
            model(images, task=model.config.task_names if task is None else task)
    finally:
        model.train(was_training)
        for p, flag in zip(parameters, needs_grad):
            p.requires_grad_(flag)
    return int(counter.get_total_flops())


def count_preset_parameters(preset: str | ModelConfig, inference: bool = True) -> int:
    """Parameters of a preset's model, built on the meta device (no memory, no initialisation cost)."""
    from polymax.build import build_model

    with torch.device("meta"):
        model = build_model(preset)
    return count_parameters(model, inference=inference)
