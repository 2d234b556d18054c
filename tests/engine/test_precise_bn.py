"""Precise BN: running statistics become the average batch statistics; momenta and mode are restored."""

from __future__ import annotations

import torch
from torch import nn

from polymax.engine.precise_bn import recalibrate_batch_norm


def test_running_stats_equal_the_average_of_batch_statistics():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.01))
    batches = [torch.randn(2, 3, 5, 5) * (i + 1) for i in range(3)]
    model.eval()
    assert recalibrate_batch_norm(model, batches) == 3
    with torch.no_grad():
        features = [model[0](b) for b in batches]
    expected_mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(dim=0)
    expected_var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in features]).mean(dim=0)
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(model[1].running_var, expected_var, rtol=1e-4)
    assert model[1].momentum == 0.01 and not model.training


def test_a_task_pass_keeps_the_models_mode_and_reaches_every_group():
    from polymax.build import build_model

    model = build_model("polymax_multitask_tiny_synth").eval()
    images = [torch.rand(2, 3, 33, 33) * 255 for _ in range(2)]
    assert recalibrate_batch_norm(model, images, task=model.config.task_names) == 2
    assert not model.training and not any(m.training for m in model.modules())
    grouped = [m for m in model.modules() if isinstance(getattr(m, "groups", None), tuple) and m.groups]
    # one pass per task and batch: the shared group serves panoptic and instance (4), the others one task (2)
    passes = {"shared": 4, "semantic": 2, "depth": 2, "normals": 2}
    assert grouped and all(int(m.statistics(g)[2]) == passes[g] for m in grouped for g in m.groups)


def test_weights_are_untouched_and_no_bn_model_is_fine():
    model = nn.Sequential(nn.Linear(3, 3))
    before = [p.clone() for p in model.parameters()]
    assert recalibrate_batch_norm(model, [torch.randn(2, 3)]) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_training_loop_ends_with_precise_bn_when_asked(tmp_path):
    from polymax.build import build_model
    from polymax.config.train import load_config, precise_bn_batches
    from polymax.data import build_dataset
    from polymax.engine.assemble import build_collate
    from polymax.engine.objective import build_objective
    from polymax.engine.sampler import SeededDataset
    from polymax.engine.train import fit

    config = load_config(overrides=["model.preset=polymax_tiny_synth_depth", "steps=2", "data.batch_size=1",
                                    "data.workers=0", f"out_dir={tmp_path}", "progress=false", "tensorboard=false",
                                    "precise_bn_batches=3"])
    model = build_model("polymax_tiny_synth_depth")
    scenes = build_dataset("synth", split="train", size=(33, 33), num_samples=4)
    torch.manual_seed(5)
    fit(config, model=model, objective=build_objective(model.config, config), train_set=SeededDataset(scenes),
        collate_fn=build_collate(model.config))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    # Reset, then exactly the 3 extra batches: a plain run would count the 2 training steps (and keep the old means).
    assert norms and all(int(n.num_batches_tracked) == 3 for n in norms)
    assert all(n.momentum == 0.01 for n in norms)
    # polymax train's default: min(16, steps) batches for short runs, none for long ones; 0 turns it off.
    assert precise_bn_batches(load_config(overrides=["steps=10"])) == 10
    assert precise_bn_batches(load_config(overrides=["steps=300"])) == 16
    assert precise_bn_batches(load_config(overrides=["steps=150000"])) == 0
    assert precise_bn_batches(load_config(overrides=["steps=300", "precise_bn_batches=0"])) == 0


def test_precise_bn_at_the_end_leaves_the_random_streams_alone():
    from polymax.engine.precise_bn import recalibrate_at_end

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5))
    batches = iter([type("B", (), {"images": torch.randn(2, 3, 4, 4)})() for _ in range(2)])
    torch.manual_seed(1)
    state = torch.get_rng_state()
    assert recalibrate_at_end(model, batches, count=2, device=torch.device("cpu")) == 2
    assert torch.equal(torch.get_rng_state(), state)
