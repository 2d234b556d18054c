"""Multi-process training through PyTorch's own machinery: ``torchrun`` sets RANK / WORLD_SIZE /
LOCAL_RANK, we join the process group (NCCL on GPUs, gloo on CPU) and wrap the model in DDP.

Each rank reads its own shard of the training stream (:mod:`polymax.engine.sampler`), DDP averages the
gradients, and only rank 0 prints, logs and writes checkpoints.

BatchNorm: with ``sync_bn`` the model's BN layers become SyncBatchNorm, so statistics are computed over the
global batch as in deeplab2. PyTorch's SyncBatchNorm runs on GPUs only; on CPU (gloo) every rank normalises
with its own batch statistics, exactly like single-process gradient accumulation over micro-batches of the
same size. Plain per-GPU BN is also the right choice to fine-tune on one GPU (nothing to synchronise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from polymax.runtime import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job. world_size 1 = plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistributedContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = resolve_device(device)
    use_cuda = wanted.type == "cuda"
    if use_cuda:
        index = local_rank if world_size > 1 else wanted.index or 0
        torch.cuda.set_device(index)
        chosen = torch.device("cuda", index)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        # A rank that finishes its share of an evaluation waits for the others (and COCO AP is computed after
        # the gather); a full COCO val pass can outlast the default 10-minute NCCL timeout, so allow two hours.
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(hours=2))
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def teardown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, context: DistributedContext, *, sync_bn: bool) -> nn.Module:
    """DDP-wrap ``model`` (already on its device) when distributed; otherwise return it unchanged.
    SyncBatchNorm only where PyTorch supports it (CUDA); see the module docstring for CPU."""
    if not context.enabled:
        return model
    if sync_bn and context.device.type == "cuda":
        convert_sync_batch_norm(model)
    elif sync_bn and context.is_main:
        print("sync_bn: SyncBatchNorm needs CUDA; on CPU every rank normalises with its own batch statistics")
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def convert_sync_batch_norm(module: nn.Module) -> None:
    """Every BatchNorm below ``module`` becomes a SyncBatchNorm, in place, except those keeping statistics per
    query group (``model/layers/group_statistics.py``), which SyncBatchNorm would replace by a single set."""
    from polymax.model.layers.group_statistics import is_grouped

    for name, child in module.named_children():
        if is_grouped(child):
            continue
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        else:
            convert_sync_batch_norm(child)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean_and_any(context: DistributedContext, value: torch.Tensor, flag: bool) -> tuple[float, bool]:
    """One collective per step: the mean of ``value`` over ranks and whether any rank raised ``flag``
    (a stop request). Every rank gets the same answers, so they all stop — or diverge — together."""
    packed = torch.stack([value.detach().float().reshape(()), torch.tensor(float(flag), device=value.device)])
    if context.enabled:
        packed = packed.to(context.device)
        dist.all_reduce(packed)
        packed[0] /= context.world_size
    mean, flags = packed.tolist()
    return mean, flags > 0


def average_gradients(context: DistributedContext, params: list[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over ranks (weights trained outside the DDP-wrapped model)."""
    if not context.enabled or not params:
        return
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad)
        param.grad /= context.world_size


def gather_objects(context: DistributedContext, obj: object) -> list[object]:
    """``obj`` from every rank, in rank order (for saving each rank's RNG state)."""
    if not context.enabled:
        return [obj]
    gathered: list[object] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(context: DistributedContext, model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank. DDP broadcasts them at the start of each forward
    pass, but that pass then updates every rank's copy with its own batch; before the ranks evaluate shares
    of one set, they must all hold the model rank 0 saves."""
    if context.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def shard(count: int, context: DistributedContext) -> range:
    """This rank's contiguous block of ``count`` items (0..count-1): rank r of W takes
    [r·count//W, (r+1)·count//W). Blocks in rank order are the items in order, which is what lets sharded
    evaluation merge the ranks' metric states into exactly the state of one process."""
    return range(context.rank * count // context.world_size, (context.rank + 1) * count // context.world_size)


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()
