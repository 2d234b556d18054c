"""Gradient checkpointing of backbone stages (``ModelConfig.checkpoint_backbone``): a stage keeps only its input
for the backward pass and runs its forward again there (``torch.utils.checkpoint``, non-reentrant), trading
about one more backbone forward pass for the memory of the stages' intermediate activations.

BatchNorm: the recomputation runs in training mode, where BatchNorm normalises with the batch's statistics (as
the first pass did, so the recomputed activations are the same) but would also move its running statistics a
second time and count the batch twice. The stage's running statistics are therefore put back, after the
recomputation, to what the forward pass left. Drop path draws the same masks again (the checkpoint restores
the RNG state).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def run_stage(stage: nn.Module, x: Tensor, *, enabled: bool) -> Tensor:
    """``stage(x)``, checkpointed when ``enabled`` and a backward pass can follow (training with autograd on);
    inference, export and ``torch.no_grad`` run the stage as is."""
    if not (enabled and stage.training and torch.is_grad_enabled()):
        return stage(x)
    return checkpoint(stage, x, use_reentrant=False,
                      context_fn=lambda: (nullcontext(), _statistics_frozen(stage)))


@contextmanager
def _statistics_frozen(stage: nn.Module) -> Iterator[None]:
    """The running statistics of ``stage``'s BatchNorms as they were before the block, whatever it did to them.

    (Running the BatchNorms untracked instead would normalise identically but save different tensors for the
    backward pass than the first forward did, which the checkpoint rejects.)"""
    buffers = [buffer for module in stage.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
               for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
               if buffer is not None]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)
