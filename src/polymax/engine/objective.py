"""The training objective over every task of a model: one criterion per task, their terms summed.

``objective(output: ModelOutput, targets) -> LossTerms``. A single-task model's terms keep the criterion's own
names (``pq_style_loss_class_term``, ``aux_0depth_silog``, ...), exactly as logs, tests and checkpoints of
single-task runs have always named them. With several tasks every term is prefixed ``"<task>/"`` (so the two
tasks' ``aux_0...`` terms stay apart) and ``.total`` is the unweighted sum over all tasks' terms; each task's
own weights live in its loss section of the TrainConfig.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from polymax.config.model import ModelConfig
from polymax.losses.terms import LossTerms
from polymax.structures import ModelOutput, Targets


class TrainingObjective(nn.Module):
    """``criteria``: task name → ``criterion(run: TaskRun, targets) -> LossTerms``, in the model's task order.

    A module (not a dict) so that any private random generator of a criterion is found and checkpointed by the
    training loop, and so the objective moves with ``.to(device)`` should a criterion hold buffers.
    """

    def __init__(self, criteria: dict[str, nn.Module]) -> None:
        super().__init__()
        if not criteria:
            raise ValueError("a training objective needs at least one task criterion")
        self.criteria = nn.ModuleDict(criteria)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the objective reads from a ModelOutput (what ``fit`` asks the model to run)."""
        return tuple(self.criteria)

    def forward(self, output: ModelOutput, targets: Targets) -> LossTerms:
        if len(self.criteria) == 1:
            (task, criterion), = self.criteria.items()
            return criterion(output[task], targets)
        terms = LossTerms()
        for task, criterion in self.criteria.items():
            terms = terms.merged(criterion(output[task], targets), prefix=f"{task}/")
        return terms


def build_objective(model_config: ModelConfig, train_config: Any = None) -> TrainingObjective:
    """The objective of every task of ``model_config``, each criterion configured by its loss section of
    ``train_config`` (a TrainConfig; None = the defaults)."""
    from polymax.build import build_criterion

    return TrainingObjective({name: build_criterion(model_config, name, train_config)
                              for name in model_config.task_names})
