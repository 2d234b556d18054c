"""Optimiser and learning-rate schedule of the official kMaX-DeepLab recipe (spec §5.1).

* :class:`KerasAdamW` — Adam as Keras' *legacy* optimiser computes it (ε added to the uncorrected √v, the
  bias correction folded into the step size), with deeplab2's decoupled weight decay ``var -= lr_t·wd·var``
  applied before the Adam update, where lr_t is the scheduled rate of the parameter's group.
* :func:`parameter_groups` — weight decay only on convolution / linear kernels (and attention ``*kernel``
  parameters), never on norms, biases, cluster centres, position tables or layer scales; every backbone
  parameter learns at ``lr × backbone_lr_multiplier``.
* :class:`WarmupPolynomialDecay` — linear warm-up, then PolynomialDecay(power 0.9) evaluated at the *global*
  step (so the decay is already under way when the warm-up ends). The rate is a pure function of the step:
  :func:`set_learning_rate` applies it to every group's ``base_lr`` before each step, so resuming needs no
  scheduler state beyond the step, and a resumed run with a new ``--steps`` follows the new schedule.

No gradient clipping and no EMA: the recipe has neither.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

# Modules whose `weight` is a kernel (decayed). Norm layers also call their scale `weight`; they are not here.
_KERNEL_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear, nn.Bilinear)


def is_decayed_kernel(module: nn.Module, name: str) -> bool:
    """deeplab2 decays variables named ``*kernel`` / ``*weight`` — in PyTorch terms the weights of conv and
    linear layers, plus raw parameters whose own name ends in ``kernel`` (e.g. an axial block's ``qkv_kernel``)."""
    if name.endswith("kernel"):
        return True
    return name == "weight" and isinstance(module, _KERNEL_MODULES)


def parameter_groups(model: nn.Module, *, lr: float, weight_decay: float, backbone_lr_multiplier: float,
                     backbone_prefix: str = "backbone.") -> list[dict]:
    """Up to four groups: {backbone, rest} × {kernels with decay, everything else without}.

    ``backbone_prefix`` selects the pixel-encoder parameters by their qualified name. Frozen parameters
    (requires_grad False) are left out.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    names: dict[tuple[bool, bool], list[str]] = {}
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            key = (full_name.startswith(backbone_prefix), is_decayed_kernel(module, param_name))
            groups.setdefault(key, []).append(param)
            names.setdefault(key, []).append(full_name)
    result = []
    for (in_backbone, decayed), params in sorted(groups.items()):
        result.append({
            "params": params,
            "param_names": names[(in_backbone, decayed)],
            "lr": lr * (backbone_lr_multiplier if in_backbone else 1.0),
            "base_lr": lr * (backbone_lr_multiplier if in_backbone else 1.0),
            "weight_decay": weight_decay if decayed else 0.0,
            "group_name": f"{'backbone' if in_backbone else 'head'}/{'decay' if decayed else 'no_decay'}",
        })
    return result


class KerasAdamW(torch.optim.Optimizer):
    """Keras-legacy Adam with deeplab2's decoupled weight decay. Per parameter, at step t (1-based)::

        var -= lr · wd · var                                   (decay first, with the scheduled lr)
        m = β1·m + (1-β1)·g ;  v = β2·v + (1-β2)·g²
        var -= lr · √(1-β2^t) / (1-β1^t) · m / (√v + ε)

    This equals PyTorch's Adam except that ε is added to √v *before* bias correction, which matters with
    ε = 1e-7 early in training.
    """

    def __init__(self, params: Iterable, *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-7, weight_decay: float = 0.0) -> None:
        if lr < 0 or eps <= 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid Adam settings lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            # Parameters of one step count update together with multi-tensor (_foreach) kernels: the same
            # per-element arithmetic as a loop over parameters, without a Python round per tensor. (Counts differ
            # only for parameters that missed steps, e.g. a task's head when no image drew that task.)
            by_step: dict[int, list[Tensor]] = {}
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                by_step.setdefault(state["step"], []).append(param)
            for t, params in by_step.items():
                grads = [param.grad for param in params]
                exp_avg = [self.state[param]["exp_avg"] for param in params]
                exp_avg_sq = [self.state[param]["exp_avg_sq"] for param in params]
                if decay != 0.0:
                    torch._foreach_add_(params, params, alpha=-lr * decay)
                torch._foreach_lerp_(exp_avg, grads, 1.0 - beta1)
                torch._foreach_mul_(exp_avg_sq, beta2)
                torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1.0 - beta2)
                denominator = torch._foreach_sqrt(exp_avg_sq)
                torch._foreach_add_(denominator, eps)
                step_size = lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
                torch._foreach_addcdiv_(params, exp_avg, denominator, value=-step_size)
        return loss


class WarmupPolynomialDecay:
    """Learning-rate factor at a global step: ``step / warmup`` during warm-up, then
    ``(1 - step / total)^power`` — the polynomial is evaluated at the global step, not the post-warm-up one.

    The optimiser update at 0-based step s uses factor(s); with warm-up the very first update has rate 0,
    as in deeplab2 (Keras evaluates the schedule at ``iterations`` before incrementing it).
    """

    def __init__(self, *, warmup_steps: int, total_steps: int, power: float = 0.9) -> None:
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError(f"need total_steps > 0 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.power = power

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        progress = min(step, self.total_steps) / self.total_steps
        return (1.0 - progress) ** self.power


    def describe(self) -> dict[str, float]:
        return {"warmup_steps": self.warmup_steps, "total_steps": self.total_steps, "power": self.power}


def set_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Every group's lr = its base_lr × factor; returns the head's (non-backbone) rate, for logging."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    groups = optimizer.param_groups
    return next((g["lr"] for g in groups if g.get("group_name", "").startswith("head")), groups[0]["lr"])


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore moments and step counts from a checkpoint, keeping the hyper-parameters of the *current*
    config (lr, decay, betas, ε), so that a resumed run can change them deliberately."""
    current = [{k: v for k, v in group.items() if k not in ("params", "param_names")}
               for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, current):
        group.update(settings)


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, backbone_lr_multiplier: float,
                    betas: tuple[float, float], eps: float, warmup_steps: int, total_steps: int,
                    power: float) -> tuple[KerasAdamW, WarmupPolynomialDecay]:
    """The optimiser over :func:`parameter_groups` and its warm-up + polynomial schedule."""
    groups = parameter_groups(model, lr=lr, weight_decay=weight_decay, backbone_lr_multiplier=backbone_lr_multiplier)
    optimizer = KerasAdamW(groups, lr=lr, betas=betas, eps=eps)
    return optimizer, WarmupPolynomialDecay(warmup_steps=warmup_steps, total_steps=total_steps, power=power)
