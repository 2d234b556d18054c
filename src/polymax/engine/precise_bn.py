"""Re-estimate BatchNorm population statistics after training ("precise BN").

deeplab2's BN momentum is 0.99 (PyTorch 0.01): the running statistics trail the weights by a few hundred
steps. That is harmless over a 150k-step schedule, but after a short run (the demo, a quick fine-tune) the
running statistics still describe the early network and evaluation suffers. Averaging the batch statistics
of a few training batches with the final weights gives the statistics the weights actually produce. Only
the running mean / variance change; weights and the training-mode computation are untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.optim.swa_utils import update_bn


class _TaskPass(nn.Module):
    """``model(images, task=task)`` as the one-argument module ``update_bn`` calls (its BatchNorms are the
    model's: ``modules()`` walks into it)."""

    def __init__(self, model: nn.Module, task: str | tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.task = model, task
        self.train(model.training)  # update_bn restores the mode it finds on the module it is given

    def forward(self, images: torch.Tensor):
        return self.model(images, task=self.task)


def recalibrate_batch_norm(model: nn.Module, images: Iterable[torch.Tensor], *,
                           task: str | tuple[str, ...] | None = None) -> int:
    """Replace every BatchNorm's running statistics by their average over the forward passes of ``images``
    (each a (B, 3, H, W) batch as the model takes it; ``task``: the tasks to run, None = the model's only one).
    Returns the number of batches used; the model's training flag and BN momenta are restored.

    PyTorch's ``torch.optim.swa_utils.update_bn`` does the work (reset, momentum None = cumulative average, one
    pass in training mode, momenta and mode restored); the per-query-group BatchNorms of a multi-task model
    follow it because they implement ``reset_running_stats`` and the cumulative average for every group."""
    count = 0

    def counted() -> Iterator[torch.Tensor]:
        nonlocal count
        for batch in images:
            count += 1
            yield batch

    update_bn(counted(), model if task is None else _TaskPass(model, task))
    return count


def recalibrate_at_end(model: nn.Module, batches: Iterator, *, count: int, device: torch.device) -> int:
    """Precise BN for the training loop: ``count`` more batches from its loader (each with ``.images``), in
    fp32, on a forked RNG so that the drop-path draws here leave the run's random streams (and with them a
    resumed run's bit-identity) untouched. Every rank calls it (SyncBatchNorm needs all of them)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return recalibrate_batch_norm(model, (next(batches).images.to(device) for _ in range(count)),
                                      task=tuple(getattr(model, "tasks", ())) or None)
