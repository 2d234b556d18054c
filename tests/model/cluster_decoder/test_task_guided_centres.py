"""``kmax_decoder.task_queries='oneformer'``: the oneformer group's initial centres come from OneFormer's task-guided
queries, so the task changes the whole pass at initialisation and the task MLP learns; off everywhere else."""

from __future__ import annotations

import pytest
import torch

from polymax.build import build_model
from polymax.config.model import TaskConfig
from polymax.errors import UserError
from polymax.presets import PRESETS

IMAGES = torch.rand(2, 3, 33, 33) * 255
K, HIDDEN = 8, 32                                  # kmax_tiny_test's kmax_decoder.num_queries and hidden
TASKS = (TaskConfig(name="panoptic", aux_semantic="none"), TaskConfig(name="instance", aux_semantic="none"))


def _model(task_queries: str = "oneformer", **overrides):
    return build_model("kmax_tiny_test", tasks=TASKS, **{"kmax_decoder.task_queries": task_queries, **overrides})


GUIDED = ("oneformer_", "polymax_multitask_tiny_synth")


@pytest.mark.parametrize("name", sorted(name for name in PRESETS if not name.startswith(GUIDED)))
def test_every_other_preset_keeps_its_learned_centres(name):
    decoder = PRESETS[name]().kmax_decoder
    assert (decoder.task_queries, decoder.task_query_values) == ("learned", "sine")


@pytest.mark.parametrize("name", sorted(name for name in PRESETS if name.startswith("oneformer_")))
def test_the_oneformer_presets_use_task_guided_centres(name):
    config = PRESETS[name]()
    assert (config.kmax_decoder.task_queries, config.kmax_decoder.task_query_values) == ("oneformer", "sine")
    assert config.task_names == ("panoptic", "semantic", "instance")


def test_the_learned_decoder_has_no_task_guided_module():
    keys = build_model("kmax_tiny_test").state_dict()
    assert "kmax_decoder.cluster_centres" in keys
    assert not any("task_queries" in key for key in keys)


def test_the_task_changes_the_output_at_initialisation():
    plain = _model("learned").eval()
    torch.manual_seed(0)
    guided = _model().eval()
    decoder = guided.kmax_decoder
    assert decoder.cluster_centres is None                        # the task-guided module replaces the table
    assert decoder.task_queries.query_position.shape == (K - 1, HIDDEN)
    with torch.no_grad():
        same = plain(IMAGES, task=("panoptic", "instance"))
        output = guided(IMAGES, task=("panoptic", "instance"))
    # the mask logits depend on the centres only (one mask head): equal for learned centres, not for guided ones
    assert torch.equal(same["panoptic"].final.mask_logits, same["instance"].final.mask_logits)
    assert not torch.allclose(output["panoptic"].final.mask_logits, output["instance"].final.mask_logits, atol=1e-4)
    for task in ("panoptic", "instance"):
        queries = output[task].task_queries
        assert queries.shape == (2, K, HIDDEN)
        assert output[task].final.mask_logits.shape[1] == K
        assert torch.allclose(queries[0, -1], queries[1, -1])    # the task token: one per task, not per image
    assert not torch.allclose(output["panoptic"].task_queries[:, -1], output["instance"].task_queries[:, -1])
    assert same["panoptic"].task_queries is None


def test_gradients_reach_the_task_mlp():
    model = _model().train()
    output = model(IMAGES, task="instance")
    output["instance"].final.mask_logits.softmax(dim=1)[:, 0].mean().backward()
    guided = model.kmax_decoder.task_queries
    for parameter in (guided.task_encoder.mlp[0].weight, guided.task_encoder.mlp[2].weight, guided.query_position,
                      guided.feature_projection.weight):
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0


def test_a_task_without_a_prompt_needs_a_group_of_its_own():
    tokens = TaskConfig(name="depth_tokens", aux_semantic="none")
    with pytest.raises(UserError, match="no OneFormer prompt"):
        build_model("kmax_tiny_test", tasks=(TASKS[0], tokens), **{"kmax_decoder.task_queries": "oneformer"})
    model = build_model("kmax_tiny_test", tasks=(TASKS[0], TaskConfig(name="depth", aux_semantic="none",
                                                                      num_queries=4)),
                        **{"kmax_decoder.task_queries": "oneformer"}).eval()
    with torch.no_grad():
        output = model(IMAGES, task=("panoptic", "depth"))
    assert output["depth"].task_queries is None and output["panoptic"].task_queries.shape == (2, K, HIDDEN)


@pytest.mark.parametrize(("field", "value"), [("task_queries", "clip"), ("task_query_values", "pixels")])
def test_unknown_values_are_one_line_errors(field, value):
    with pytest.raises(UserError, match=field):
        build_model("kmax_tiny_test", **{f"kmax_decoder.{field}": value})


def test_the_natural_variant_is_a_switch():
    model = _model(**{"kmax_decoder.task_query_values": "features"})
    assert model.kmax_decoder.task_queries.memory_values == "features"
