"""Re-estimate BatchNorm population statistics after training ("precise BN").

deeplab2's BN momentum is 0.99 (PyTorch 0.01): the running statistics trail the weights by a few hundred
steps. That is harmless over a 150k-step schedule, but after a short run (the demo, a quick fine-tune) the
running statistics still describe the early network and evaluation suffers. Averaging the batch statistics
of a few training batches with the final weights gives the statistics the weights actually produce. Only
the running mean / variance change; weights and the training-mode computation are untouched.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, images: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm's running statistics by their average over the forward passes of ``images``
    (each a (B, 3, H, W) batch as the model takes it). Returns the number of batches used; the model's
    training flag and BN momenta are restored."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: equal weight for every batch
    model.train()
    count = 0
    try:
        for batch in images:
            model(batch)
            count += 1
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return count
