"""The tiny one-model-for-every-task presets post-process panoptic and instance results as the synthetic rooms'
panoptic preset does (area limits of 16 / 64 pixels: COCO's 400 / 6400 would drop every segment of a 65² room)."""

from __future__ import annotations

import pytest

from polymax.presets import PRESETS


@pytest.mark.parametrize("name", ["polymax_multitask_tiny_synth", "polymax_multitask_tiny_synth_tokens"])
def test_tiny_multitask_presets_use_the_rooms_post_processing(name):
    assert PRESETS[name]().postprocess == PRESETS["polymax_tiny_synth_panoptic"]().postprocess


def test_every_parameter_of_the_five_task_model_learns():
    """All five tasks in one call: every parameter (trunk, each query group, each head, the task-guided module and
    the auxiliary semantic branch) is connected to some output."""
    import torch

    from polymax.build import build_model

    torch.manual_seed(0)
    model = build_model("polymax_multitask_tiny_synth")
    for module in model.modules():          # non-zero BN scales and shifts: see tests/model/test_presets.py
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.5, 0.5)
    output = model(torch.rand(2, 3, 33, 33) * 255, task=model.tasks)
    loss = 0
    for task in model.tasks:
        run = output[task]
        for part in (run.final, *run.aux):
            loss = loss + sum(t.float().square().mean() for t in part.tensors().values())
        if run.semantic_logits is not None:
            loss = loss + run.semantic_logits.square().mean()
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not silent, silent
