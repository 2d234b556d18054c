"""Distributed training on CPU (gloo): 2 ranks with batch B each must follow the same loss trajectory as one
process training on the doubled batch 2B.

What exactly is compared, and why it can match:
* The single process runs the doubled batch as 2 micro-batches of B (``data.accumulate=2``). PyTorch's
  SyncBatchNorm is GPU-only, so on CPU each rank normalises with the statistics of its own B samples; the
  accumulating process does the same per micro-batch. (A single 2B forward pass would use 2B-sample
  statistics, and the losses would legitimately differ.)
* The training stream hands rank r of micro-step m the same samples, with the same augmentation seeds, that
  micro-batch r of the single process gets (``polymax.engine.sampler``).
* DDP averages gradients over ranks; accumulation sums gradients of losses divided by 2: equal up to float
  rounding. The logged loss is the mean over ranks / micro-batches in both cases.
* Randomness that is drawn per process cannot line up between 1 and 2 processes, so drop path is off, the
  (randomly sampled) instance-discrimination term has weight 0 and the auxiliary semantic branch (dropout)
  is left out here. Augmentation stays on: it is seeded
  per sample.
Tolerance: relative 1e-4 on every step's loss (the summation order of the gradients differs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from polymax.engine.sampler import ShardedStream

COMMON = ["--preset", "kmax_tiny_test", "--steps", "4", "--set", "data.workers=0", "--set", "log_every=1",
          "--set", "progress=false", "--set", "optim.warmup_steps=1", "--set", "optim.lr=1e-3",
          "--set", "model.backbone_drop_path_keep=1.0", "--set", "model.decoder_drop_path_keep=1.0",
          "--set", "loss.inst_disc_weight=0", "--set", "model.aux_semantic=none",
          "--set", "augment.min_scale=0.8", "--set", "augment.max_scale=1.2"]


def _losses(out_dir) -> list[float]:
    lines = (out_dir / "scalars.jsonl").read_text().splitlines()
    return [json.loads(line)["loss/total"] for line in lines]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow  # ~20 s: three Python processes start and import torch
def test_two_gloo_ranks_match_one_process_with_the_doubled_batch(tmp_path):
    single = subprocess.run([sys.executable, "-m", "polymax", "train", *COMMON, "--batch-size", "4",
                             "--set", "data.accumulate=2", "--out", str(tmp_path / "single")],
                            capture_output=True, text=True, timeout=300, env=_env())
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                          "-m", "polymax", "train", *COMMON, "--batch-size", "4", "--out", str(tmp_path / "ddp")],
                         capture_output=True, text=True, timeout=300, env=_env())
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single_losses, ddp_losses = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert len(single_losses) == len(ddp_losses) == 4
    assert ddp_losses == pytest.approx(single_losses, rel=1e-4)
    assert len(set(single_losses)) > 1  # the model does learn: the trajectory is not a constant
    assert (tmp_path / "ddp" / "last" / "model.safetensors").is_file()
    assert not list((tmp_path / "ddp").glob(".last.tmp-*"))  # only rank 0 writes, no stray temporaries


def test_rank_shards_are_the_micro_batches_of_one_process():
    """The fast half of the argument above: 2 ranks × B == 1 process × 2 micro-batches of B, sample by sample
    (index and augmentation seed), and the ranks never share a sample within a step."""
    def take(stream, count):
        iterator = iter(stream)
        return [next(iterator) for _ in range(count)]

    batch, steps = 3, 5
    single = take(ShardedStream(10, per_rank_batch=batch, seed=4), 2 * batch * steps)
    ranks = [take(ShardedStream(10, per_rank_batch=batch, rank=r, world_size=2, seed=4), batch * steps)
             for r in range(2)]
    for step in range(steps):
        block = slice(step * batch, (step + 1) * batch)
        assert ranks[0][block] == single[2 * step * batch:(2 * step + 1) * batch]
        assert ranks[1][block] == single[(2 * step + 1) * batch:(2 * step + 2) * batch]
    resumed = take(ShardedStream(10, per_rank_batch=batch, rank=1, world_size=2, seed=4, start_micro_step=2), batch)
    assert resumed == ranks[1][2 * batch:3 * batch]
    indices = [index for index, _ in single[:10]]
    assert sorted(indices) == list(range(10))  # one epoch is a permutation
