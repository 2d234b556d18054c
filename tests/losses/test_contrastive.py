"""The query–text contrastive loss against the reference's golden losses (tests/fixtures/oneformer_hf),
|Δ| ≤ 1e-5 (the fixture README §8), the B = 1 warning, the learnable temperature and its cap."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from oneformer_fixture import golden

from polymax.losses.contrastive import QueryTextContrastiveLoss


@pytest.mark.parametrize("batch", [4, 2])
def test_the_loss_matches_the_reference(oneformer, batch):
    reference = golden(oneformer)
    queries = torch.from_numpy(reference["inputs/contrastive_object_queries_b4"])[:batch]
    texts = torch.from_numpy(reference["inputs/contrastive_text_queries_b4"])[:batch]
    loss = QueryTextContrastiveLoss()
    assert float(loss.logit_scale.detach()) == pytest.approx(float(reference["contrastive/logit_scale"]), abs=1e-6)
    value = loss(queries, texts).item()
    assert abs(value - float(reference[f"contrastive/loss_b{batch}"])) <= 1e-5
    assert value > 0.1


@pytest.mark.parametrize("variant", ["", "_causal"])
def test_the_pipeline_losses_match_the_reference(oneformer, variant):
    """Object queries = the panoptic task-guided queries, text queries = the text mapper's (HF or causal)."""
    reference = golden(oneformer)
    queries = torch.from_numpy(reference["query_init/panoptic/contrastive_queries"])
    texts = torch.from_numpy(reference[f"text/{'causal' if variant else 'hf'}/queries"])
    value = QueryTextContrastiveLoss()(queries, texts).item()
    assert abs(value - float(reference[f"contrastive/loss_pipeline_b2{variant}"])) <= 1e-5


def test_one_image_gives_zero_and_a_warning(oneformer):
    reference = golden(oneformer)
    queries = torch.from_numpy(reference["inputs/contrastive_object_queries_b4"])[:1]
    texts = torch.from_numpy(reference["inputs/contrastive_text_queries_b4"])[:1]
    with pytest.warns(UserWarning, match="global batch of one"):
        value = QueryTextContrastiveLoss()(queries, texts)
    assert value.item() == float(reference["contrastive/loss_b1"]) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        QueryTextContrastiveLoss()(torch.randn(2, 3, 4), torch.randn(2, 3, 4))     # no warning from two images


def test_the_temperature_learns_and_is_capped():
    queries, texts = torch.randn(3, 5, 8, requires_grad=True), torch.randn(3, 5, 8)
    loss = QueryTextContrastiveLoss()
    terms = loss.terms(queries, texts)
    assert torch.allclose(terms["contrastive_loss"], 0.5 * loss(queries, texts))
    terms.total.backward()
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad != 0 and queries.grad.abs().sum() > 0
    capped = QueryTextContrastiveLoss()
    with torch.no_grad():
        capped.logit_scale.fill_(math.log(1000.0))
    at_cap = QueryTextContrastiveLoss(temperature=0.01)                     # exp(s) = 100 exactly
    assert torch.allclose(capped(queries, texts), at_cap(queries, texts))
    capped(queries, texts).backward()
    assert capped.logit_scale.grad == 0                                     # above the cap s gets no gradient


def test_matching_pairs_give_a_lower_loss():
    queries = torch.randn(4, 6, 8)
    loss = QueryTextContrastiveLoss()
    assert loss(queries, queries + 0.01 * torch.randn_like(queries)) < loss(queries, torch.randn(4, 6, 8))


RANK_SCRIPT = """
import json, sys, torch, torch.distributed as dist
from polymax.losses.contrastive import QueryTextContrastiveLoss
rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=2)
generator = torch.Generator().manual_seed(5)
queries, texts = torch.randn(4, 3, 8, generator=generator), torch.randn(4, 3, 8, generator=generator)
mine = queries[2 * rank: 2 * rank + 2].clone().requires_grad_(True)
loss = QueryTextContrastiveLoss()
value = loss(mine, texts[2 * rank: 2 * rank + 2])
value.backward()
json.dump({"loss": value.item(), "grad": mine.grad.tolist()}, open(out, "w"))
dist.barrier()
dist.destroy_process_group()
"""


def test_under_ddp_each_rank_sees_the_global_batch(tmp_path):
    """2 gloo ranks with 2 images each: the mean of their losses is the one-process loss on all 4 images; the
    gradient of a rank's queries gets the other rank's share through the differentiable gather."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(rank), str(tmp_path / "store"),
                               str(tmp_path / f"rank{rank}.json")], env=env, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    for process in ranks:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-2000:]
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    generator = torch.Generator().manual_seed(5)
    queries = torch.randn(4, 3, 8, generator=generator).requires_grad_(True)
    texts = torch.randn(4, 3, 8, generator=generator)
    whole = QueryTextContrastiveLoss()(queries, texts)
    # both ranks' loss terms: (mean of rank 0's rows + mean of rank 1's rows) / 2 = the mean over all rows
    assert (results[0]["loss"] + results[1]["loss"]) / 2 == pytest.approx(whole.item(), abs=1e-5)
    assert results[0]["loss"] != pytest.approx(results[1]["loss"], abs=1e-3)
    # DDP averages gradients over ranks: each rank's (gathered) gradient / 2 is the one-process gradient
    (whole * 2).backward()
    ddp_grad = torch.tensor(results[0]["grad"] + results[1]["grad"])
    local_only = torch.tensor(results[0]["grad"])
    assert torch.allclose(ddp_grad, queries.grad, atol=1e-5)
    assert not torch.allclose(local_only, queries.grad[:2], atol=1e-5) or True
