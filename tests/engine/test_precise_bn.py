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


def test_weights_are_untouched_and_no_bn_model_is_fine():
    model = nn.Sequential(nn.Linear(3, 3))
    before = [p.clone() for p in model.parameters()]
    assert recalibrate_batch_norm(model, [torch.randn(2, 3)]) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
