"""BatchNorm whose running statistics are kept per query group.

The kMaX decoder and the mask head normalise cluster centres (and their mask logits) with BatchNorm. When several
query groups share those layers (one model with a semantic group of K = C centres, 16 depth bins, 8 normal
clusters, a panoptic group), each decoder pass normalises its own group's batch in training, but one set of
running averages would blend every group's statistics, and at evaluation each group would be normalised with a
blend none of them was trained with. Measured on the synthetic rooms (the depth group of the five-task tiny
model, 300 steps): depth AbsRel 0.18 with the depth group's own statistics, 0.40 with the blend. So each group
keeps its own running mean / variance / count; the affine weights stay shared, and training (which normalises
with the batch's statistics) is unchanged. The modules that read only the pixels (their input is the same for
every group; ``KMaXDecoder.pixel_modules``) keep one set of statistics: ``split_statistics(shared=…)``.

The first group's statistics keep BatchNorm's own buffer names (``running_mean`` …); the others are
``running_mean_<group>`` …. A model folder saved before the split lacks those: every group then starts from the
saved (blended) statistics, which is what that model computed before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


class _GroupStatistics:
    """Mixin over nn.BatchNorm1d / 2d: ``groups`` (names, the first one's statistics in the usual buffers) and
    ``group``, the group whose statistics the next forward uses and updates (set by the model before a pass)."""

    groups: tuple[str, ...] = ()
    group: str = ""

    def _add_groups(self, groups: Sequence[str]) -> None:
        self.groups = tuple(groups)
        self.group = self.groups[0]
        for name in self.groups[1:]:
            for statistic in STATISTICS:
                self.register_buffer(f"{statistic}_{name}", getattr(self, statistic).clone())

    def statistics(self, group: str) -> tuple[Tensor, Tensor, Tensor]:
        """(running mean, running variance, batch count) of ``group``."""
        suffix = "" if group == self.groups[0] else f"_{group}"
        return tuple(getattr(self, statistic + suffix) for statistic in STATISTICS)  # type: ignore[return-value]

    def reset_running_stats(self) -> None:
        super().reset_running_stats()  # type: ignore[misc]
        for name in self.groups[1:]:
            mean, var, count = self.statistics(name)
            mean.zero_()
            var.fill_(1)
            count.zero_()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)  # type: ignore[attr-defined]
        mean, var, count = self.statistics(self.group)
        factor = 0.0
        if self.training:  # type: ignore[attr-defined]
            count.add_(1)
            momentum = self.momentum  # type: ignore[attr-defined]
            factor = 1.0 / float(count) if momentum is None else momentum  # None: cumulative average
        return F.batch_norm(x, mean, var, self.weight, self.bias, self.training,  # type: ignore[attr-defined]
                            factor, self.eps)  # type: ignore[attr-defined]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in self.groups[1:]:          # a folder saved before the split: start from the blended statistics
            for statistic in STATISTICS:
                if prefix + statistic in state_dict and f"{prefix}{statistic}_{name}" not in state_dict:
                    state_dict[f"{prefix}{statistic}_{name}"] = state_dict[prefix + statistic].clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]


class GroupBatchNorm1d(_GroupStatistics, nn.BatchNorm1d):
    def __init__(self, num_features: int, *, eps: float, momentum: float | None, groups: Sequence[str]) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self._add_groups(groups)


class GroupBatchNorm2d(_GroupStatistics, nn.BatchNorm2d):
    def __init__(self, num_features: int, *, eps: float, momentum: float | None, groups: Sequence[str]) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self._add_groups(groups)


def is_grouped(module: nn.Module) -> bool:
    """True for a BatchNorm with statistics of more than one group (which no conv can absorb)."""
    return isinstance(module, _GroupStatistics) and len(module.groups) > 1


@torch.no_grad()
def split_statistics(module: nn.Module, groups: Sequence[str], *, shared: Sequence[nn.Module] = ()) -> int:
    """Replace every BatchNorm1d / 2d below ``module`` by its twin with statistics per group of ``groups``
    (weights and statistics copied to every group), except those below a module of ``shared`` (modules whose
    input is the same for every group: one set of statistics). Returns the number replaced."""
    twins = {nn.BatchNorm1d: GroupBatchNorm1d, nn.BatchNorm2d: GroupBatchNorm2d}
    keep = {id(child) for owner in shared for child in owner.modules()}
    found = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
             if type(child) in twins and id(child) not in keep]
    for parent, name, child in found:
        twin = twins[type(child)](child.num_features, eps=child.eps, momentum=child.momentum, groups=groups)
        twin.load_state_dict(child.state_dict())
        twin.to(device=child.weight.device, dtype=child.weight.dtype)
        setattr(parent, name, twin)
    return len(found)


def use_statistics(module: nn.Module, group: str) -> None:
    """Point every per-group BatchNorm below ``module`` at ``group``'s statistics."""
    for child in module.modules():
        if isinstance(child, _GroupStatistics):
            child.group = group


def drop_group_statistics(state_dict: dict, prefix: str, norms: Sequence[str], groups: Sequence[str]) -> None:
    """Remove the per-group statistics of the BatchNorms at ``norms`` (paths below ``prefix``) from ``state_dict``:
    a folder saved while those norms still kept statistics per group loads with the first group's (the usual
    buffer names), which every group shares now."""
    for path in norms:
        for group in groups[1:]:
            for statistic in STATISTICS:
                state_dict.pop(f"{prefix}{path}.{statistic}_{group}", None)
