"""The training objective over every task of a model: one criterion per task, their terms summed.

``objective(output: ModelOutput, targets) -> LossTerms``. A single-task model's terms keep the criterion's own
names (``pq_style_loss_class_term``, ``aux_0depth_silog``, ...), exactly as logs, tests and checkpoints of
single-task runs have always named them. With several tasks every term is prefixed ``"<task>/"`` (so the two
tasks' ``aux_0...`` terms stay apart) and ``.total`` is the unweighted sum over all tasks' terms; each task's
own weights live in its loss section of the TrainConfig.

OneFormer (joint training of one task-conditioned model): ``model_inputs(batch)`` draws a task per image
(``TaskSampler``) and the model runs the mixed batch in one pass; each task's run holds its images
(``TaskRun.samples``), its criterion sees their targets, and its terms are weighted by its share of the batch
(so a step's loss is the mean over images, whatever the draw). With ``task_sampling='shared'`` only the tasks of
the shared task-guided group are drawn; the tasks with query groups of their own run on every image of the same
forward pass (``every_image``). The query–text contrastive loss
(:class:`OneFormerTextLoss`) is owned here, not by the model: its text mapper and temperature are trained with
the model but are neither saved with it for prediction nor exported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from polymax.config.model import ModelConfig
from polymax.errors import UserError
from polymax.losses.terms import LossTerms
from polymax.structures import ModelOutput, Targets, TaskRun


class TaskSampler(nn.Module):
    """Draws one task per image from ``probabilities`` (task → probability, normalised) with a private
    generator (checkpointed with the run, so a resumed run draws what an uninterrupted one would)."""

    def __init__(self, probabilities: dict[str, float], *, seed: int = 0) -> None:
        super().__init__()
        total = sum(probabilities.values())
        if not probabilities or total <= 0 or min(probabilities.values()) < 0:
            raise UserError(f"task probabilities {probabilities} must be at least 0 and not all 0")
        self.tasks = tuple(probabilities)
        self.register_buffer("weights", torch.tensor([probabilities[t] / total for t in self.tasks]),
                             persistent=False)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, batch: int, supported: torch.Tensor | None = None) -> tuple[str, ...]:
        """``batch`` task names; with ``supported`` (B, T) bool (the tasks each image's labels can train, in
        ``self.tasks`` order), image b draws among its own tasks only (renormalised; all tasks when it has none)."""
        weights = self.weights.cpu()
        if supported is None:
            index = torch.multinomial(weights, batch, replacement=True, generator=self.generator)
            return tuple(self.tasks[i] for i in index.tolist())
        rows = weights[None, :] * supported.cpu().float()                                   # (B, T)
        rows = torch.where(rows.sum(1, keepdim=True) > 0, rows, weights[None, :])
        index = torch.multinomial(rows, 1, generator=self.generator)[:, 0]
        return tuple(self.tasks[i] for i in index.tolist())


class OneFormerTextLoss(nn.Module):
    """The query–text contrastive loss of OneFormer: texts of each image's task targets → TextMapper → Q_text,
    compared with the run's task-guided queries (``TaskRun.task_queries``, the initial N queries)."""

    def __init__(self, config: ModelConfig, options: Any) -> None:
        super().__init__()
        from polymax.losses.contrastive import QueryTextContrastiveLoss
        from polymax.text import ClassVocabularyTokenizer, TextMapper

        kd = config.kmax_decoder
        if options.num_context >= kd.num_queries:
            raise UserError(f"oneformer.num_context={options.num_context} leaves no text among the "
                            f"{kd.num_queries} queries; lower it")
        self.config = config
        self.num_texts = kd.num_queries - options.num_context
        self.tokenizer = ClassVocabularyTokenizer(class_names=config.dataset.class_names)
        self.mapper = TextMapper(vocab_size=self.tokenizer.vocab_size, hidden=kd.hidden, width=options.text_width,
                                 num_heads=options.text_heads, num_layers=options.text_layers,
                                 num_context=options.num_context, causal=options.text_causal)
        self.loss = QueryTextContrastiveLoss(temperature=options.temperature, weight=options.contrastive_weight)

    def forward(self, output: ModelOutput, targets: Targets) -> LossTerms:
        from polymax.text import task_texts

        queries, ids = [], []
        for task in output.tasks:
            run = output[task]
            if run.task_queries is None or not has_texts(task):
                continue       # depth / normals on the shared group: no class masks, so no texts to contrast
            samples = range(run.task_queries.shape[0]) if run.samples is None else run.samples.tolist()
            for row, b in enumerate(samples):
                crowd = None if targets.crowd is None else targets.crowd[b]
                texts = task_texts(task, targets.panoptic[b], crowd, self.config, num_texts=self.num_texts)
                ids.append(self.tokenizer(texts))
                queries.append(run.task_queries[row])
        if not queries:
            return LossTerms()
        device = queries[0].device
        text_queries = self.mapper(torch.stack(ids).to(device))                           # (B, N, E)
        return self.loss.terms(torch.stack(queries), text_queries)


class TrainingObjective(nn.Module):
    """``criteria``: task name → ``criterion(run: TaskRun, targets) -> LossTerms``, in the model's task order.

    A module (not a dict) so that any private random generator of a criterion is found and checkpointed by the
    training loop, and so the objective moves with ``.to(device)`` should a criterion hold buffers.
    ``sampler``: a OneFormer model's per-image task draw (None: every task on every image); ``every_image``: with a
    sampler, the tasks that run on every image besides the drawn one (``task_sampling='shared'``); ``text``: its
    contrastive loss (None: off). Their parameters (text mapper, temperature) are the objective's own.
    """

    def __init__(self, criteria: dict[str, nn.Module], *, sampler: TaskSampler | None = None,
                 text: OneFormerTextLoss | None = None, ignore_label: int = 255, label_divisor: int = 1000,
                 task_weights: dict[str, float] | None = None, every_image: tuple[str, ...] = ()) -> None:
        super().__init__()
        if not criteria:
            raise ValueError("a training objective needs at least one task criterion")
        unknown = set(task_weights or {}) - set(criteria)
        if unknown:
            raise UserError(f"loss.task_weights names {', '.join(sorted(unknown))}, not a task of this model "
                            f"({', '.join(criteria)})")
        self.criteria = nn.ModuleDict(criteria)
        self.task_weights = {task: float((task_weights or {}).get(task, 1.0)) for task in criteria}
        self.sampler = sampler
        self.every_image = tuple(every_image)
        self.text = text
        self.void = {"ignore_label": ignore_label, "label_divisor": label_divisor}   # the labels' void values

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the objective reads from a ModelOutput (what ``fit`` asks the model to run)."""
        return tuple(self.criteria)

    def model_inputs(self, batch: int, targets: Targets | None = None) -> dict[str, Any]:
        """The keyword arguments of the model call for a micro-batch of ``batch`` images (with ``targets``, each
        image draws among the tasks its labels support)."""
        if self.sampler is None:
            return {"task": self.tasks}
        supported = None if targets is None else supported_tasks(targets, self.sampler.tasks, **self.void)
        drawn = {"sample_tasks": self.sampler(batch, supported)}
        return {"task": self.every_image, **drawn} if self.every_image else drawn

    def forward(self, output: ModelOutput, targets: Targets) -> LossTerms:
        if len(self.criteria) == 1 and self.sampler is None and self.text is None:
            (task, criterion), = self.criteria.items()
            return _scaled(criterion(output[task], targets), self.task_weights[task])
        terms = LossTerms()
        batch = _batch_size(targets)
        mixed = any(run.samples is not None for run in output.runs.values())
        supported = supported_tasks(targets, self.tasks, **self.void)                        # (B, T) bool
        for column, (task, criterion) in enumerate(self.criteria.items()):
            if mixed and task not in output.runs:
                continue                       # no image of this mixed-task batch drew this task
            run = output[task]
            samples = torch.arange(batch) if run.samples is None else run.samples.cpu()
            labelled = supported[samples, column]                     # the run's images whose labels train it
            weight = self.task_weights[task]
            if bool(labelled.all()) and run.samples is None:
                terms = terms.merged(_scaled(criterion(run, targets), weight), prefix=f"{task}/")
                continue
            if not bool(labelled.any()):
                continue                       # missing labels are no target: no loss rather than a wrong one
            rows = torch.nonzero(labelled)[:, 0]
            if not bool(labelled.all()):
                run = select_run(run, rows.to(_run_device(run)))
            share = rows.numel() / batch
            task_terms = criterion(run, select_targets(targets, samples[rows]))
            terms = terms.merged(_scaled(task_terms, share * weight), prefix=f"{task}/")
        if self.text is not None:
            terms = terms.merged(self.text(output, targets))
        return terms


def has_texts(task: str) -> bool:
    """Whether OneFormer writes texts for ``task``: its targets are class masks (``Task.mask_classes`` defined)."""
    from polymax.tasks import get_task
    from polymax.tasks.base import Task

    return type(get_task(task)).mask_classes is not Task.mask_classes


def supported_tasks(targets: Targets, tasks: Sequence[str], *, ignore_label: int = 255,
                    label_divisor: int = 1000) -> torch.Tensor:
    """(B, T) bool on the CPU: whether image b has labels for task ``tasks[t]`` — every label field the task
    reads (``Task.labels``) holds at least one valid pixel. Collation fills a missing label with its invalid
    value (void, depth 0, normals 0), so an image of a data set without depth reads False for depth."""
    from polymax.tasks import get_task

    batch = _batch_size(targets)
    columns = []
    for task in tasks:
        present = torch.ones(batch, dtype=torch.bool)
        for label in get_task(task).labels:
            values = getattr(targets, label.name, None)
            if values is None:
                present &= False
            else:
                present &= label.present(values, ignore_label=ignore_label, label_divisor=label_divisor)
        columns.append(present)
    return torch.stack(columns, dim=1)


def _scaled(terms: LossTerms, factor: float) -> LossTerms:
    return terms if factor == 1.0 else LossTerms({name: value * factor for name, value in terms.values.items()})


def select_run(run: TaskRun, index: torch.Tensor) -> TaskRun:
    """``run`` cut to its images ``index`` (rows of its own batch): outputs, semantic logits, queries, samples."""
    from polymax.model.meta_arch import select_samples

    return TaskRun(task=run.task, final=select_samples(run.final, index),
                   aux=[select_samples(aux, index) for aux in run.aux],
                   semantic_logits=None if run.semantic_logits is None else run.semantic_logits[index],
                   task_queries=None if run.task_queries is None else run.task_queries[index],
                   samples=None if run.samples is None else run.samples[index])


def _run_device(run: TaskRun) -> torch.device:
    return next(value for value in vars(run.final).values() if isinstance(value, torch.Tensor)).device


def _batch_size(targets: Targets) -> int:
    for value in vars(targets).values():
        if isinstance(value, torch.Tensor):
            return value.shape[0]
    raise ValueError("the targets hold no tensor")


def select_targets(targets: Targets, index: torch.Tensor) -> Targets:
    """The targets of the images ``index`` (every tensor field cut along the batch axis)."""
    return type(targets)(**{name: value[index.to(value.device)] if isinstance(value, torch.Tensor) else value
                            for name, value in vars(targets).items()})


def oneformer_probabilities(tasks: Sequence[str], options: Any) -> dict[str, float]:
    """Task → draw probability for the OneFormer tasks ``tasks`` from the TrainConfig's ``oneformer`` section."""
    return {task: float(getattr(options, f"{task}_probability")) for task in tasks}


def build_objective(model_config: ModelConfig, train_config: Any = None) -> TrainingObjective:
    """The objective of every task of ``model_config``, each criterion configured by its loss section of
    ``train_config`` (a TrainConfig; None = the defaults). A task-conditioned model with several tasks
    (OneFormer's task-guided centres, or one model for every dense task) trains either every task its labels
    support on every image or one drawn task per image (``oneformer.task_sampling``); a OneFormer model whose
    tasks all read the task-guided group also gets, with a positive ``oneformer.contrastive_weight``, the
    query–text loss."""
    from polymax.build import build_criterion
    from polymax.config.train import TrainConfig

    train_config = train_config or TrainConfig()
    criteria = {name: build_criterion(model_config, name, train_config) for name in model_config.task_names}
    common = {"ignore_label": model_config.dataset.ignore_label, "label_divisor": model_config.dataset.label_divisor,
            "task_weights": train_config.loss.task_weights}
    if model_config.kmax_decoder.task_queries != "oneformer":
        return TrainingObjective(criteria, **common)
    options = train_config.oneformer
    guided = [task.name for task in model_config.tasks if task.num_queries == 0]
    sampling = task_sampling(model_config, options)
    if sampling == "all" or (sampling == "shared" and not guided):
        return TrainingObjective(criteria, **common)
    names = model_config.task_names
    every_image: tuple[str, ...] = ()
    if sampling == "shared":      # the guided tasks draw per image; the tasks with groups of their own run on all
        every_image = tuple(name for name in names if name not in guided)
        names = tuple(guided)
    probabilities = {task: p for task, p in oneformer_probabilities(names, options).items() if p > 0}
    text = None
    if options.contrastive_weight > 0 and len(guided) == len(model_config.task_names):
        # Initial text weights from the run's seed alone (the same on every rank, whatever ran before).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train_config.seed)
            text = OneFormerTextLoss(model_config, options)
    # Each rank draws its own tasks (built after the process group is set up under torchrun).
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    sampler = TaskSampler(probabilities, seed=train_config.seed + 7919 * rank)
    return TrainingObjective(criteria, sampler=sampler, text=text, every_image=every_image, **common)


def task_sampling(model_config: ModelConfig, options: Any) -> str:
    """'image' (one drawn task per image) or 'all' (every task on every image): ``options.task_sampling``, with
    'auto' = per image when every task reads the task-guided group (OneFormer), else every task."""
    if options.task_sampling != "auto":
        return options.task_sampling
    return "image" if all(task.num_queries == 0 for task in model_config.tasks) else "all"
