"""The one-shared-group multi-task model (``polymax_multitask_tiny_synth_tokens``): OneFormer's shared head
serves only the segmentation tasks; depth and normals keep heads of their own kind, so a mixed-task batch
trains every task (a depth run read by a class head used to fail in the depth criterion)."""

from __future__ import annotations

import torch

from polymax.build import build_model
from polymax.config.train import load_config
from polymax.data import build_dataset
from polymax.data.collate import collate
from polymax.engine.objective import build_objective


def test_segmentation_tasks_share_one_head_and_depth_normals_keep_their_own():
    model = build_model("polymax_multitask_tiny_synth_tokens")
    heads = model.heads
    assert heads["panoptic"] is heads["semantic"] is heads["instance"]
    assert type(heads["depth"]).__name__ == "DepthHead" and type(heads["normals"]).__name__ == "NormalsHead"


def test_a_mixed_batch_of_all_five_tasks_gives_a_finite_loss_and_gradients_for_every_head():
    config = load_config(None, overrides=["model.preset=polymax_multitask_tiny_synth_tokens",
                                          "oneformer.task_sampling=image", "oneformer.num_context=8"])
    model = build_model("polymax_multitask_tiny_synth_tokens")
    objective = build_objective(model.config, config)
    rooms = build_dataset("synth", split="train", size=(33, 33), num_samples=5)
    batch = collate([rooms[i] for i in range(5)])
    tasks = ("panoptic", "semantic", "instance", "depth", "normals")
    output = model(batch.images.float(), sample_tasks=tasks)
    loss = objective(output, batch.targets).total
    assert torch.isfinite(loss)
    loss.backward()
    for task in ("panoptic", "depth", "normals"):
        assert any(p.grad is not None for p in model.heads[task].parameters()), task
