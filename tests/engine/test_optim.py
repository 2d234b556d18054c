"""The optimiser and schedule of the kMaX recipe: Keras-legacy Adam arithmetic, decoupled decay on kernels
only, backbone lr × 0.1, warm-up then polynomial decay at the global step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from polymax.engine.optim import (
    KerasAdamW,
    WarmupPolynomialDecay,
    build_optimizer,
    load_optimizer_state,
    parameter_groups,
    set_learning_rate,
)
from polymax.model.layers.norms import ChannelLayerNorm


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.decoder = nn.Linear(4, 4)
        self.norm = ChannelLayerNorm(4)
        self.cluster_centres = nn.Parameter(torch.zeros(8, 4))
        self.qkv_kernel = nn.Parameter(torch.zeros(4, 12))


def _names(groups, label):
    return sorted(n for g in groups if g["group_name"] == label for n in g["param_names"])


def test_groups_decay_only_kernels_and_slow_down_the_backbone():
    groups = parameter_groups(_Toy(), lr=1.0, weight_decay=0.05, backbone_lr_multiplier=0.1)
    assert _names(groups, "backbone/decay") == ["backbone.0.weight"]
    assert _names(groups, "backbone/no_decay") == ["backbone.0.bias", "backbone.1.bias", "backbone.1.weight"]
    assert _names(groups, "head/decay") == ["decoder.weight", "qkv_kernel"]
    assert _names(groups, "head/no_decay") == ["cluster_centres", "decoder.bias", "norm.norm.bias",
                                               "norm.norm.weight"]
    by_name = {g["group_name"]: g for g in groups}
    assert by_name["backbone/decay"]["lr"] == pytest.approx(0.1) and by_name["head/decay"]["lr"] == 1.0
    assert by_name["head/no_decay"]["weight_decay"] == 0.0 and by_name["head/decay"]["weight_decay"] == 0.05


def test_keras_adam_step_matches_the_formula():
    torch.manual_seed(0)
    param = nn.Parameter(torch.randn(5))
    start = param.detach().clone()
    grads = [torch.randn(5) for _ in range(3)]
    optimizer = KerasAdamW([param], lr=0.01, eps=1e-7, weight_decay=0.05)
    expected, m, v = start.double(), torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    for t, grad in enumerate(grads, start=1):
        param.grad = grad.clone()
        optimizer.step()
        g = grad.double()
        expected = expected - 0.01 * 0.05 * expected            # decoupled decay first, with the scheduled lr
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        expected = expected - 0.01 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (v.sqrt() + 1e-7)
    torch.testing.assert_close(param.detach().double(), expected, rtol=1e-6, atol=1e-7)
    # ε sits outside the bias correction: not the same as PyTorch's Adam when √v is small.
    torch_param = nn.Parameter(start.clone())
    torch_adam = torch.optim.Adam([torch_param], lr=0.01, eps=1e-7)
    for grad in grads:
        torch_param.grad = grad.clone() * 1e-6
        torch_adam.step()
    assert not torch.allclose(torch_param, param)


def test_schedule_warms_up_then_decays_polynomially_at_the_global_step():
    schedule = WarmupPolynomialDecay(warmup_steps=10, total_steps=100, power=0.9)
    assert schedule(0) == 0.0 and schedule(5) == pytest.approx(0.5)
    assert schedule(10) == pytest.approx((1 - 10 / 100) ** 0.9)  # decay already under way after warm-up
    assert schedule(100) == 0.0 and schedule(150) == 0.0
    optimizer, schedule = build_optimizer(_Toy(), lr=2.0, weight_decay=0.05, backbone_lr_multiplier=0.1,
                                          betas=(0.9, 0.999), eps=1e-7, warmup_steps=10, total_steps=100, power=0.9)
    head_lr = set_learning_rate(optimizer, schedule(5))
    assert head_lr == pytest.approx(1.0)
    assert {round(g["lr"], 6) for g in optimizer.param_groups} == {0.1, 1.0}


def test_loading_state_keeps_the_current_hyper_parameters():
    model = _Toy()
    old, _ = build_optimizer(model, lr=1.0, weight_decay=0.05, backbone_lr_multiplier=0.1, betas=(0.9, 0.999),
                             eps=1e-7, warmup_steps=0, total_steps=10, power=0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    old.step()
    new, _ = build_optimizer(model, lr=0.5, weight_decay=0.05, backbone_lr_multiplier=0.1, betas=(0.9, 0.999),
                             eps=1e-7, warmup_steps=0, total_steps=10, power=0.9)
    load_optimizer_state(new, old.state_dict())
    assert sorted(g["base_lr"] for g in new.param_groups) == pytest.approx([0.05, 0.05, 0.5, 0.5])
    assert all(new.state[p]["step"] == 1 for p in model.parameters())


def test_the_multi_tensor_step_equals_a_loop_over_parameters():
    """Bit for bit, also when some parameters miss steps (no gradient) and so run at another step count."""
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(shape)) for shape in ((3, 4), (7,), (2, 2, 2))]
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    optimizer = KerasAdamW(params, lr=0.01, eps=1e-7, weight_decay=0.05)
    state = {id(t): (torch.zeros_like(t), torch.zeros_like(t), 0) for t in twins}
    for step in range(4):
        for index, (param, twin) in enumerate(zip(params, twins)):
            skip = index == 1 and step == 1
            grad = None if skip else torch.randn_like(param)
            param.grad = twin.grad = grad
        optimizer.step()
        with torch.no_grad():
            for twin in twins:                               # the per-parameter formula of the class docstring
                if twin.grad is None:
                    continue
                m, v, t = state[id(twin)]
                t += 1
                twin.add_(twin, alpha=-0.01 * 0.05)
                m.lerp_(twin.grad, 0.1)
                v.mul_(0.999).addcmul_(twin.grad, twin.grad, value=0.001)
                twin.addcdiv_(m, v.sqrt().add_(1e-7), value=-0.01 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t))
                state[id(twin)] = (m, v, t)
    for param, twin in zip(params, twins):
        assert torch.equal(param, twin)
    assert optimizer.state[params[1]]["step"] == 3 and optimizer.state[params[0]]["step"] == 4
