"""Sharded evaluation: the images split over ranks, the ranks' metric states merged, must give the metrics of one
process — for every task (panoptic, instance, semantic, depth, normals) of the tiny five-task model.

Counts (confusion matrices, TP / FP / FN, pixel and image counts) and COCO AP (the same images, ids and order)
are exact; the float64 sums (panoptic IoU, depth per-image values, normal angles) are added in another order
(rank 0's partial sum plus rank 1's instead of one running sum), so they agree to ~1e-16 relative: compared
with rel=1e-12.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import threading

import pytest
import torch

from polymax.build import build_model
from polymax.data import build_dataset
from polymax.engine import distributed
from polymax.engine.distributed import DistributedContext
from polymax.inference.evaluate import evaluate

PRESET = "polymax_multitask_tiny_synth"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(PRESET).eval()
    with torch.no_grad():   # a fresh model predicts almost one thing everywhere: make its maps vary
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def _dataset(count: int = 3):
    return build_dataset("synth", split="val", size=(40, 48), num_samples=count)


def _assert_same(sharded: dict[str, float], single: dict[str, float]) -> None:
    assert sharded.keys() == single.keys()
    for key, value in single.items():
        if math.isnan(value):
            assert math.isnan(sharded[key]), key
        else:
            assert sharded[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_shards_are_contiguous_blocks_covering_every_item_once():
    for count in (0, 1, 5, 7):
        for world in (1, 2, 3):
            blocks = [distributed.shard(count, DistributedContext(rank=r, world_size=world)) for r in range(world)]
            assert [i for block in blocks for i in block] == list(range(count))


@pytest.mark.parametrize("count, batch_size, limit", [
    (3, 2, None),                                               # 2 batches, the second one short
    pytest.param(7, 2, 3, marks=pytest.mark.slow),              # ~10 s: 3 of 4 batches, shares of 1 and 2
])
def test_two_ranks_in_threads_give_the_one_process_metrics(monkeypatch, count, batch_size, limit):
    """The merge logic end to end without processes: two threads play the ranks, a barrier plays all-gather."""
    model, dataset = _model(), _dataset(count)
    single = evaluate(model, dataset=dataset, batch_size=batch_size, max_batches=limit)
    barrier, slots = threading.Barrier(2), [None, None]

    def gather(context, obj):
        slots[context.rank] = obj
        barrier.wait()
        return list(slots)

    monkeypatch.setattr(distributed, "gather_objects", gather)
    results: list = [None, None]

    def rank(index: int) -> None:
        results[index] = evaluate(copy.deepcopy(model), dataset=dataset, batch_size=batch_size, max_batches=limit,
                                  context=DistributedContext(rank=index, world_size=2))

    threads = [threading.Thread(target=rank, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for result in results:
        _assert_same(result, single)
    assert not math.isnan(single["semantic/miou"]) and not math.isnan(single["panoptic/pq"])


RANK_SCRIPT = """
import json, sys, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[4])
from test_evaluate_sharded import _dataset, _model
from polymax.engine.distributed import DistributedContext
from polymax.inference.evaluate import evaluate
rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=2)
metrics = evaluate(_model(), dataset=_dataset(), batch_size=2, context=DistributedContext(rank=rank, world_size=2))
json.dump(metrics, open(out, "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow  # ~15 s on two busy cores: two Python processes import torch and build the model
def test_two_gloo_processes_give_the_one_process_metrics(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    here = os.path.dirname(os.path.abspath(__file__))
    ranks = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(rank), str(tmp_path / "store"),
                               str(tmp_path / f"rank{rank}.json"), here], env=env, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    for process in ranks:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)           # as in the rank processes: the model's float32 outputs depend on it
    try:
        single = evaluate(_model(), dataset=_dataset(), batch_size=2)
    finally:
        torch.set_num_threads(threads)
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.json") as file:
            _assert_same({k: (math.nan if v is None else v) for k, v in json.load(file).items()}, single)


REFERENCE_SCRIPT = """
import json, sys, torch
import polymax
from polymax.config.train import TrainConfig
from polymax.engine.assemble import build_evaluate_fn
from polymax.engine.checkpoint import saved_config
last = sys.argv[1]
config = TrainConfig.from_dict(saved_config(last))
model = polymax.load_model(last)
print(json.dumps(build_evaluate_fn(config, model.config, device=torch.device("cpu"))(model)))
"""


@pytest.mark.slow  # ~15 s: a 2-rank training run under torchrun, then one evaluation process
def test_periodic_evaluation_under_ddp_scores_the_saved_model_on_every_image(tmp_path):
    """The eval/* scalars of a 2-rank run (each rank a share of the evaluation images, rank 0's BatchNorm
    statistics on both) equal one process evaluating the model the run saved."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    train = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m", "polymax",
         "train", "--preset", "kmax_tiny_test", "--steps", "2", "--batch-size", "4", "--out", str(out),
         "--set", "data.workers=0", "--set", "progress=false", "--set", "eval_every=2", "--set", "eval_batches=3",
         "--set", "optim.warmup_steps=1"], capture_output=True, text=True, timeout=600, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    logged = [json.loads(line) for line in (out / "scalars.jsonl").read_text().splitlines()]
    during = {key.removeprefix("eval/"): value for record in logged for key, value in record.items()
              if key.startswith("eval/")}
    assert during
    reference = subprocess.run([sys.executable, "-c", REFERENCE_SCRIPT, str(out / "last")], capture_output=True,
                               text=True, timeout=300, env=env)
    assert reference.returncode == 0, reference.stderr[-3000:]
    single = json.loads(reference.stdout.splitlines()[-1].replace("NaN", "null"))
    _assert_same(during, {k: (math.nan if v is None else v) for k, v in single.items() if k in during})
