"""The training data stream: an endless, resumable, rank-sharded sequence of (dataset index, sample seed).

Every training sample has a *global position* n = 0, 1, 2, … in one stream shared by all ranks. Position n
is dataset index ``permutation_e[n mod N]`` of epoch e = n // N (a fresh permutation per epoch, from the run
seed), and its augmentation is driven by its own seed derived from (run seed, n). Each micro-batch of the
whole job is a contiguous block of the stream, and rank r reads the r-th sub-block of it:

    micro-step m, world W, per-rank batch b:   rank r gets positions  m·W·b + r·b … m·W·b + (r+1)·b − 1

Consequences that the engine relies on:
* resuming needs only the number of micro-steps done (the *data-loader position*), no iterator state;
* a sample's pixels do not depend on the number of loader workers or on which process loads it;
* one process with accumulate = W sees exactly the micro-batches that W ranks see, so DDP can be
  checked against single-process training.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def sample_seed(run_seed: int, position: int) -> int:
    """A 32-bit seed for the sample at global stream position ``position`` (well mixed, so neighbouring
    positions get unrelated random streams)."""
    return int(np.random.SeedSequence([run_seed, position]).generate_state(1)[0])


class ShardedStream(torch.utils.data.Sampler):
    """Yields ``(index, seed)`` pairs for one rank, forever, starting after ``start_micro_step`` micro-steps."""

    def __init__(self, dataset_size: int, *, per_rank_batch: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, start_micro_step: int = 0) -> None:
        if dataset_size <= 0:
            raise ValueError("the training data set is empty")
        self.dataset_size = dataset_size
        self.per_rank_batch = per_rank_batch
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.start_micro_step = start_micro_step

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        micro_step = self.start_micro_step
        epoch, permutation = -1, None
        while True:
            first = (micro_step * self.world_size + self.rank) * self.per_rank_batch
            for position in range(first, first + self.per_rank_batch):
                if position // self.dataset_size != epoch:
                    epoch = position // self.dataset_size
                    permutation = self._permutation(epoch)
                yield int(permutation[position % self.dataset_size]), sample_seed(self.seed, position)
            micro_step += 1


@contextmanager
def seeded(seed: int):
    """Seed python, numpy and torch (CPU) for one sample, and put the caller's generators back afterwards,
    so per-sample randomness neither depends on nor disturbs the training process's streams."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        # The CPU generator only: torch.manual_seed would also seed every accelerator's generator, which fork_rng
        # (devices=[]) does not put back, and its lazy-initialisation hooks cost ~1 ms per sample on CPU.
        torch.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class SeededDataset(torch.utils.data.Dataset):
    """``dataset[(index, seed)]``: sample ``index`` through ``transform(sample, generator[, paste_source])``
    with ``generator = numpy.random.default_rng(seed)``, so a sample's augmentation is a function of its
    stream position only. With ``paste_source`` a second, randomly chosen sample is handed to the transform
    (panoptic copy-paste). Loading runs under :func:`seeded`, for data sets that use the global generators.
    """

    def __init__(self, dataset: Any, transform: Callable[..., Any] | None = None, *,
                 paste_source: bool = False) -> None:
        self.dataset = dataset
        self.transform = transform
        self.paste_source = paste_source

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        generator = np.random.default_rng(seed)
        with seeded(seed):
            sample = self.dataset[index]
            if self.transform is None:
                return sample
            if self.paste_source:
                source = self.dataset[int(generator.integers(len(self.dataset)))]
                return self.transform(sample, generator, source)
            return self.transform(sample, generator)
