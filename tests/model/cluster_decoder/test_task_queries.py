"""OneFormer's task token and task-guided query initialisation against the reference's golden outputs
(tests/fixtures/oneformer_hf): max|Δ| ≤ 1e-5 · max|ref| per array (the fixture README §8)."""

from __future__ import annotations

import pytest
import torch
from deeplab2_fixture import assert_close_to_scale
from oneformer_fixture import HIDDEN, TASKS, N, golden, task_guided_queries, task_token_encoder

from polymax.model.cluster_decoder.task_queries import (
    TASK_PROMPT_IDS,
    TaskGuidedQueries,
    prompt_ids,
    sine_position_encoding,
)


def test_the_prompts_are_the_fixtures_ids(oneformer):
    expected = golden(oneformer)["inputs/task_ids"]
    for row, task in enumerate(TASKS):
        assert prompt_ids(task).tolist() == expected[row].tolist()
    assert set(TASK_PROMPT_IDS) == {*TASKS, "depth", "normals"}
    with pytest.raises(ValueError, match="no OneFormer prompt"):
        prompt_ids("depth_tokens")


def test_the_task_token_matches_the_reference(oneformer):
    encoder = task_token_encoder(oneformer)
    ids = torch.stack([prompt_ids(task) for task in TASKS])
    with torch.no_grad():
        before_norm = encoder.mlp(ids.float())
        token = encoder(ids)
    # the pre-norm vector is in the thousands: the tolerance is relative to its scale (README §8)
    assert float(before_norm.abs().max()) > 1e3
    assert_close_to_scale(before_norm.numpy(), golden(oneformer)["task/mlp_out"], "task/mlp_out", rel=1e-5)
    assert_close_to_scale(token.numpy(), golden(oneformer)["task/token"], "task/token", rel=1e-5)


def test_the_sine_encoding_matches_the_reference(oneformer):
    assert_close_to_scale(sine_position_encoding(16, 16, HIDDEN).numpy(), golden(oneformer)["query_init/sine_pos"],
                          "query_init/sine_pos", rel=1e-5)


@pytest.mark.parametrize("task", TASKS)
def test_task_guided_queries_match_the_reference(oneformer, task):
    module = task_guided_queries(oneformer)
    reference = golden(oneformer)
    pixels = torch.from_numpy(reference["inputs/mask_features"])
    ids = prompt_ids(task).expand(2, -1)
    outputs = []
    hooks = [layer.register_forward_hook(lambda m, i, out: outputs.append(out)) for layer in module.layers]
    with torch.no_grad():
        result = module(pixels, ids)
        keys, _ = module.memory(pixels)
    for hook in hooks:
        hook.remove()
    projected = module.feature_projection(pixels).detach().numpy()
    assert_close_to_scale(projected, reference["query_init/pos_proj"], "pos_proj", rel=1e-5)
    for index, output in enumerate(outputs):
        assert_close_to_scale(output.numpy(), reference[f"query_init/{task}/layer{index}"], f"layer{index}", rel=1e-5)
    assert_close_to_scale(result.queries[:, :-1].numpy(), reference[f"query_init/{task}/queries"], "queries", rel=1e-5)
    assert_close_to_scale(result.queries.numpy(), reference[f"query_init/{task}/contrastive_queries"],
                          "contrastive_queries", rel=1e-5)
    assert torch.equal(result.queries[:, -1], result.task_token)
    assert result.queries.shape == (2, N, HIDDEN) and keys.shape == (2, 256, HIDDEN)


def test_each_sample_can_run_its_own_task(oneformer):
    module = task_guided_queries(oneformer)
    ids = torch.stack([prompt_ids("panoptic"), prompt_ids("instance")])
    with torch.no_grad():
        result = module(torch.from_numpy(golden(oneformer)["inputs/mask_features"]), ids)
    expected = golden(oneformer)["query_init/mixed_panoptic_instance/contrastive_queries"]
    assert_close_to_scale(result.queries.numpy(), expected, "mixed", rel=1e-5)


def test_the_natural_variant_reads_the_features_as_values(oneformer):
    """The switch changes the numbers (values = projected features): it cannot match the reference."""
    quirk, natural = task_guided_queries(oneformer), task_guided_queries(oneformer, memory_values="features")
    pixels = torch.from_numpy(golden(oneformer)["inputs/mask_features"])
    ids = prompt_ids("panoptic").expand(2, -1)
    with torch.no_grad():
        keys_q, values_q = quirk.memory(pixels)
        keys_n, values_n = natural.memory(pixels)
        a, b = quirk(pixels, ids).queries, natural(pixels, ids).queries
    assert torch.allclose(keys_q, keys_n)                                        # keys: features + positions alike
    assert torch.equal(values_q[0], values_q[1])                                 # quirk: values hold no image content
    assert not torch.allclose(values_n[0], values_n[1])
    assert (a[:, :-1] - b[:, :-1]).abs().max() > 1e-2 and torch.equal(a[:, -1], b[:, -1])
    with pytest.raises(ValueError, match="memory_values"):
        TaskGuidedQueries(num_queries=N, feature_channels=HIDDEN, hidden=HIDDEN, memory_values="pixels")
