"""`polymax demo`: train ONE small PolyMaX model for every dense task on the built-in synthetic rooms, evaluate it
on held-out rooms against trivial baselines, and show what it answers and what each cluster learned.

The model is ``polymax_multitask_tiny_synth``: one trunk, one kMaX decoder, and per task the query group and
head PolyMaX gives it (panoptic and instance share OneFormer's task-guided group; semantic K = C, 16 depth bins,
8 normal clusters). The demo

1. trains it with the regular training engine on every task at once (each room has all five kinds of labels;
   checkpoints in ``OUT/runs/<mode>/joint/``: re-running the demo after an interruption continues from them),
   then re-estimates the BatchNorm statistics on training rooms (:mod:`polymax.engine.precise_bn`: a short run
   leaves BN's slow running averages behind the weights), each query group its own,
2. evaluates every task on held-out validation rooms with the project's metrics,
3. computes the same metrics for a trivial baseline fitted on training rooms — the mean training depth per
   pixel, the most frequent normal, the majority class (one segment, or one instance of the most frequent
   thing class),
4. writes ``OUT/demo.png`` (one held-out room: the five ground truths above the five answers of the one model,
   then each task's per-cluster probability maps with each cluster's value, as in the PolyMaX paper's Fig. 8),
   ``OUT/<task>.png`` (three rooms per task with keys) and ``OUT/model/`` (a model directory that
   ``polymax predict --model OUT/model --task all`` reads),
5. with ``compare``, also trains one single-task model per task (the same preset cut to that task, the same
   steps) and reports its figures beside the joint model's (``OUT/runs/<mode>/single_<task>/``).

``OUT/metrics.json`` is written last and atomically: if it exists, the run that wrote it finished.

Reproducible on one machine: every random stream is seeded (``seed``), each training process runs on one CPU
thread by default (the quick demo trains as two data-parallel processes, :mod:`polymax.engine.local_ranks`; their
number is part of the recipe, not of the machine), and PyTorch's deterministic algorithms are switched on while the
demo runs, so two runs with the same settings write identical ``metrics.json`` files. Another CPU, PyTorch build
or thread count may change the last digits (floating-point sums in another order).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from polymax.errors import UserError
from polymax.io.pretrained import atomic_write, save_pretrained
from polymax.text.prompts import article

if TYPE_CHECKING:
    from PIL import Image

    from polymax.config.model import ModelConfig
    from polymax.data.sample import Sample
    from polymax.structures import TaskOutput

PRESET = "polymax_multitask_tiny_synth"
TASKS = ("panoptic", "semantic", "instance", "depth", "normals")        # the preset's task order
# The headline metrics of each task and whether higher is better (used for the summary and the checks).
HEADLINE = {"semantic": (("miou", True),), "depth": (("abs_rel", False), ("rms", False)),
            "normals": (("mean", False), ("within_11_25", True)),
            "panoptic": (("pq", True), ("pq_things", True), ("miou", True)), "instance": (("ap", True),)}


class DemoInterrupted(UserError):
    """Ctrl-C or SIGTERM during training: progress is saved, metrics.json is not written."""


@dataclass(frozen=True)
class DemoSettings:
    """size: square training / evaluation resolution (32k+1); steps / batch_size / lr: training of the one model
    (and of each single-task model with ``compare``); processes: data-parallel training processes sharing the
    batch (each normalises its own share: the figures depend on it, not on the machine's cores); augment: the
    training augmentation (scale jitter, colour policy, flips) or the rendered rooms as they are;
    backbone_lr_multiplier: the backbone's share of the learning rate; eval_samples: held-out rooms;
    baseline_samples: training rooms the trivial baselines see."""

    size: int
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    eval_samples: int
    processes: int = 1
    augment: bool = True
    backbone_lr_multiplier: float = 0.1
    baseline_samples: int = 64
    picture_samples: int = 3


# A high learning rate: at 300 steps lr 8e-3 finds the rooms' objects where 2e-3 has not started (the panoptic
# model alone: PQ 0.35 vs 0.03; measured on the synthetic rooms, docs/multitask.md).
# The quick demo trains as two processes of 6 images (batch 12), one per core of a 2-core machine: 7-11 % more
# time than one process of 8, and over five seeds every floor but PQ things holds at every seed (with 8 in one process
# AbsRel failed at one seed and normals within 11.25° fell below the trivial baseline at two); means PQ 0.369 →
# 0.380, AbsRel 0.165 → 0.160, mean angle 32.1° → 29.3°, mask AP 0.013 → 0.007 (docs/multitask.md).
# It trains on the rendered rooms as they are, the backbone at the full learning rate. 300 steps show each of the
# 1000 training rooms about 3.6 times, far from fitting them: augmentation has little overfitting to prevent, and
# it moves the training rooms away from the held-out ones (same renderer, same camera). kMaX's backbone rate of 0.1
# is for a backbone that starts from ImageNet weights; this one starts from random weights. Five seeds, both
# changes together: mean PQ 0.380 → 0.435, PQ things 0.071 → 0.086, AbsRel 0.160 → 0.141, mean angle 29.3° →
# 24.8° (docs/multitask.md).
QUICK = DemoSettings(size=65, steps=300, batch_size=12, lr=8e-3, warmup_steps=20, eval_samples=32, processes=2,
                     augment=False, backbone_lr_multiplier=1.0)
# The default demo trains so too: three seeds, PQ 0.332 → 0.482 (the earlier recipe's seed 2 lost its panoptic
# stuff: PQ 0.138), PQ things 0.085 → 0.140, AbsRel 0.154 → 0.118, mean angle 23.1° → 18.2° (docs/multitask.md).
FULL = DemoSettings(size=65, steps=1200, batch_size=8, lr=8e-3, warmup_steps=50, eval_samples=100, augment=False,
                    backbone_lr_multiplier=1.0)


DEMO_TASK_WEIGHTS = {"semantic": 0.3, "depth": 3.0, "normals": 3.0}
# OneFormer's query-text loss at the size of configs/polymax_multitask_tiny_synth.yaml. Only a model whose tasks all
# read the task-guided group trains it (with ``compare``: the panoptic-only and instance-only models); the
# defaults are the full-size model's (a 16-row context would leave no text among the 16 queries).
TEXT_OPTIONS = ("oneformer.num_context=8", "oneformer.text_width=64", "oneformer.text_layers=2",
                "oneformer.text_heads=4")


@dataclass
class TaskReport:
    """One task of the demo's model: its held-out metrics, the trivial baseline's, and (``compare``) those of the
    single-task model trained alone for as many steps."""

    task: str
    model: dict[str, float]
    trivial: dict[str, float]
    picture: Path
    model_dir: Path
    seconds: float
    single: dict[str, float] | None = field(default=None)


def run_demo(out_dir: Path, *, settings: DemoSettings, tasks: tuple[str, ...] = TASKS, mode: str = "quick",
             progress: bool = True, seed: int = 0, compare: bool = False) -> list[TaskReport]:
    """Train one model for ``tasks``, evaluate and picture each task; returns one report per task."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise UserError(f"unknown demo task(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(TASKS)}")
    tasks = tuple(t for t in TASKS if t in tasks)
    _check_writable(out_dir)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        reports = _run(out_dir, settings=settings, tasks=tasks, mode=mode, progress=progress, seed=seed,
                       compare=compare)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    _write_metrics(out_dir / "metrics.json", reports)
    return reports


def _run(out_dir: Path, *, settings: DemoSettings, tasks: tuple[str, ...], mode: str, progress: bool, seed: int,
         compare: bool) -> list[TaskReport]:
    started = time.perf_counter()
    _say(f"[demo] training one {PRESET} model for {', '.join(tasks)}: {settings.steps} steps at "
         f"{settings.size}x{settings.size}")
    model = _train(tasks, out_dir / "runs" / mode / "joint", settings=settings, progress=progress, seed=seed)
    model_dir = out_dir / "model"
    save_pretrained(model, model_dir)
    _say(f"[demo] trained in {time.perf_counter() - started:.0f} s; evaluating on held-out rooms")
    val = _synth("val", settings.size, settings.eval_samples)
    train_rooms = _synth("train", settings.size, settings.baseline_samples)
    reports = []
    for task in tasks:
        begun = time.perf_counter()
        picture = out_dir / f"{task}.png"
        _atomic_save_image(task_picture(model, val, count=settings.picture_samples, task=task), picture)
        reports.append(TaskReport(task=task, model=_evaluate(model, val, task),
                                  trivial=trivial_baseline_metrics(model.config, val, train_rooms, task),
                                  picture=picture, model_dir=model_dir, seconds=time.perf_counter() - begun))
        _say(f"[{task}] " + _headline_line(reports[-1]))
    _atomic_save_image(overview_picture(model, val[0]), out_dir / "demo.png")
    if compare:
        for report in reports:
            _say(f"[compare] training {article(report.task)} {report.task}-only model for {settings.steps} steps")
            single = _train((report.task,), out_dir / "runs" / mode / f"single_{report.task}", settings=settings,
                            progress=progress, seed=seed)
            report.single = _evaluate(single, val, report.task)
            _say(f"[compare] {report.task}-only: " + _headline_line(report, report.single))
    return reports


def _train(tasks: tuple[str, ...], run_dir: Path, *, settings: DemoSettings, progress: bool, seed: int):
    """Train with the regular engine; an earlier (interrupted or finished) run in ``run_dir`` is resumed."""
    from polymax.config.train import load_config
    from polymax.engine.local_ranks import run_local_ranks
    from polymax.engine.precise_bn import recalibrate_batch_norm
    from polymax.io.pretrained import load_model

    size = settings.size
    subset = [] if tasks == TASKS else [f"model.only_tasks=[{','.join(tasks)}]"]
    # Task weights: the segmentation tasks each sum 13 kMaX terms, depth and normals four small ones; weighted
    # up, the continuous tasks shape the shared trunk too (300 steps, one seed: normals 32.8° → 29.3°, PQ 0.33 →
    # 0.37). 128 sampled pixels for the pixel-contrastive term (kMaX samples a few % of the pixels), not all 289
    # of a 65² room's stride-4 map: 10 % faster steps, no measurable change. One worker renders the rooms
    # beside the training thread.
    weights = {task: weight for task, weight in DEMO_TASK_WEIGHTS.items() if task in tasks}
    # The model of all five tasks (docs/multitask.md, three seeds each; other task sets keep the recipe's ways):
    # - no auxiliary semantic branch (kMaX's training-only per-pixel class loss on the backbone features): the
    #   semantic task's own query group learns the same classes; a step is ~7 % shorter, PQ, AbsRel and the mean
    #   angle improve on average, semantic mIoU and mask AP fall a little;
    # - panoptic or instance drawn per image, as OneFormer draws its tasks, in one pass of the shared group, while
    #   semantic, depth and normals train on every image: one decoder pass fewer, a step ~10 % shorter.
    joint = ["model.aux_semantic=none", "oneformer.task_sampling=shared"] if tasks == TASKS else []
    # One process: one loader worker renders the rooms beside it. Several: each renders its own share in line
    # (a worker per process would leave more processes than cores).
    workers = 1 if settings.processes == 1 else 0
    config = load_config(None, overrides=[
        f"model.preset={PRESET}", *subset, *joint, f"data.crop_size=[{size},{size}]", f"data.workers={workers}",
        f"data.batch_size={settings.batch_size}", f"steps={settings.steps}", f"optim.lr={settings.lr}",
        f"optim.warmup_steps={settings.warmup_steps}",
        f"optim.backbone_lr_multiplier={settings.backbone_lr_multiplier}",
        f"augment.enabled={str(settings.augment).lower()}", "augment.min_scale=0.75", "augment.max_scale=1.25",
        "augment.copy_paste=false", "augment.autoaugment_magnitude=0.5", "loss.inst_disc_samples=128",
        f"loss.task_weights={json.dumps(weights)}", *TEXT_OPTIONS,
        f"checkpoint_every={max(settings.steps // 4, 1)}", "log_every=10", f"seed={seed}",
        f"progress={str(progress).lower()}", "tensorboard=false", f"out_dir={run_dir}", "device=cpu",
        "sync_bn=false"])
    resume = (run_dir / "last").is_dir()
    if settings.processes > 1:
        interrupted = run_local_ranks(settings.processes, _fit_rank, config, resume,
                                      threads=torch.get_num_threads())[0]
    else:
        interrupted = _fit_rank(config, resume)
    if interrupted:  # Ctrl-C / SIGTERM: the engine saved a checkpoint; stop the demo here
        raise DemoInterrupted(f"interrupted while training; the checkpoint in {run_dir / 'last'} is kept — "
                              "run the same command again to continue")
    model = load_model(run_dir / "last")
    # A short run leaves BN's slow running statistics (momentum 0.01) behind the weights: re-estimate them, every
    # task's pass (each query group keeps its own statistics).
    rooms = _synth("train", size, settings.batch_size * 8)
    images = (torch.stack([rooms[i].image for i in range(start, start + settings.batch_size)]).float()
              for start in range(0, len(rooms), settings.batch_size))
    recalibrate_batch_norm(model, images, task=model.config.task_names)
    return model


def _fit_rank(config, resume: bool) -> bool:
    """Train with the regular engine in this process: one rank of ``settings.processes`` (joined through the
    environment :func:`~polymax.engine.local_ranks.run_local_ranks` sets) or the only one. True when a signal
    stopped the run early."""
    from polymax.engine import distributed
    from polymax.engine.assemble import build_collate, build_train_set, build_training_model
    from polymax.engine.objective import build_objective
    from polymax.engine.train import fit

    context = distributed.setup(config.device)
    try:
        model = build_training_model(config)
        result = fit(config, model=model, objective=build_objective(model.config, config),
                     train_set=build_train_set(config, model.config), collate_fn=build_collate(model.config),
                     resume=resume, context=context)
    finally:
        distributed.teardown(context)
    return result.interrupted is not None


def _synth(split: str, size: int, count: int):
    from polymax.data import build_dataset
    return build_dataset("synth", split=split, size=(size, size), num_samples=count)


def _evaluate(model, dataset, task: str) -> dict[str, float]:
    from polymax.inference.evaluate import evaluate
    return evaluate(model, dataset=dataset, task=task, batch_size=8)


# --------------------------------------------------------------------------------------------- baselines
def trivial_baseline_metrics(config: ModelConfig, val: Sequence[Sample], train: Sequence[Sample],
                             task: str | None = None) -> dict[str, float]:
    """The metrics of ``task`` (None: the model's only task) for its constant predictor fitted on ``train``
    (``Task.trivial_result``: the per-pixel mean depth, the most frequent normal, the majority class — as one
    segment for panoptic), computed by the task's own metrics on ``val`` as the model's are."""
    from polymax.data.collate import collate
    from polymax.tasks import get_task

    task_config = config.task(task)
    definition = get_task(task_config.name)
    predict = definition.trivial_result(config, task_config, train)
    metrics = definition.build_metrics(config, task_config)
    info = config.dataset
    for sample in val:
        targets = collate([sample], ignore_label=info.ignore_label, label_divisor=info.label_divisor).targets
        metrics.update(predict(sample), targets, 0)
    return metrics.compute()


# --------------------------------------------------------------------------------------------- pictures
def task_picture(model: nn.Module, dataset: Sequence[Sample], *, count: int = 3,
                 task: str | None = None) -> Image.Image:
    """One PIL image: for `count` held-out rooms input | ground truth | prediction | key (the legend of the
    classes and void, or the colour bar in metres, or the normal colour code), then the per-cluster probability
    maps of the first room, each captioned with its cluster's value (``Task.cluster_captions``)."""
    from PIL import Image

    from polymax.inference.predictor import Predictor
    from polymax.tasks import get_task, visualize

    config = model.config
    predictor = Predictor(model, task=task, resize="none")
    definition = get_task(predictor.task)
    tile = 150
    rows, first = [], None
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        image = sample.image.permute(1, 2, 0).numpy()                                     # (H, W, 3) uint8
        result = predictor.predict(image, probabilities=index == 0)
        first = first or (sample, result)
        truth = definition.ground_truth_result(sample, config)
        note = definition.range_note(truth)
        key = definition.key([truth, result], config, reference=truth, height=tile)
        rows += [("input", image),
                 ("ground truth" + (f" ({note})" if note else ""), definition.picture_map(truth, config)),
                 ("prediction", definition.picture_map(result, config, reference=truth)),
                 ("key", key if key is not None else np.full((tile, 1, 3), 255, dtype=np.uint8))]
    grid = visualize.panel(rows, columns=4, tile_height=tile, title=f"{config.preset}: held-out synthetic rooms")
    sample, result = first
    captions = definition.cluster_captions(_final_output(model, sample, predictor.task), config)
    # One shared colour scale up to the largest probability, so weakly used clusters stay comparable.
    clusters = visualize.cluster_panel(result.probabilities, captions, tile_height=70, columns=8,
                                       title="per-cluster probability maps P = softmax_K(mask logits) of the "
                                             "first room")
    canvas = Image.new("RGB", (max(grid.width, clusters.width), grid.height + clusters.height), (255, 255, 255))
    canvas.paste(grid, (0, 0))
    canvas.paste(clusters, (0, grid.height))
    return canvas


@torch.no_grad()
def _final_output(model: nn.Module, sample: Sample, task: str) -> TaskOutput:
    """The task's final output for one sample (batch of one, model resolution): its clusters' values."""
    return model(sample.image[None].float(), task=task)[task].final


def overview_picture(model: nn.Module, sample: Sample) -> Image.Image:
    """One PIL image for one held-out room: the input and each task's ground truth above the one model's answer
    to every task (one model call, ``task="all"``), then each task's per-cluster probability maps captioned
    with the cluster's value."""
    from PIL import Image

    from polymax.inference.predictor import Predictor
    from polymax.tasks import get_task, visualize

    config = model.config
    image = sample.image.permute(1, 2, 0).numpy()                                         # (H, W, 3) uint8
    answers = Predictor(model, task="all", resize="none").predict(image, probabilities=True)
    truths, predictions = [("input", image)], [("", np.full_like(image, 255))]
    for task in answers:
        definition = get_task(task)
        truth = definition.ground_truth_result(sample, config)
        truths.append((f"{task}: truth", definition.picture_map(truth, config)))
        predictions.append((f"{task}: one model", definition.picture_map(answers[task], config, reference=truth)))
    parts = [visualize.panel(truths + predictions, columns=len(truths), tile_height=130,
                             title=f"{config.preset}: one model, every task, a held-out room")]
    for task in answers:
        captions = get_task(task).cluster_captions(_final_output(model, sample, task), config)
        parts.append(visualize.cluster_panel(answers[task].probabilities, captions, tile_height=60, columns=16,
                                             title=f"{task}: per-cluster probability maps P = softmax_K(mask logits)"))
    canvas = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts)), (255, 255, 255))
    top = 0
    for part in parts:
        canvas.paste(part, (0, top))
        top += part.height
    return canvas


# --------------------------------------------------------------------------------------------- reporting
def _headline_line(report: TaskReport, metrics: dict[str, float] | None = None) -> str:
    metrics = report.model if metrics is None else metrics
    nan = float("nan")
    return ", ".join(f"{name} {metrics.get(name, nan):.3f} (trivial {report.trivial.get(name, nan):.3f})"
                     for name, _ in HEADLINE[report.task])


def summary_table(reports: list[TaskReport]) -> str:
    """The terminal summary: task, metric, the one model, the trivial baseline, whether the model is better, and
    (with ``compare``) the single-task model."""
    single = any(r.single is not None for r in reports)
    header = f"{'task':10}{'metric':14}{'model':>10}{'trivial':>10}  better"
    lines = [header + (f"{'single-task':>14}" if single else "")]
    for report in reports:
        for name, higher in HEADLINE[report.task]:
            model, trivial = report.model.get(name, float("nan")), report.trivial.get(name, float("nan"))
            better = model > trivial if higher else model < trivial
            line = f"{report.task:10}{name:14}{model:10.3f}{trivial:10.3f}  {'yes' if better else 'NO ':6}"
            if report.single is not None:
                line += f"{report.single.get(name, float('nan')):12.3f}"
            lines.append(line.rstrip())
    return "\n".join(lines)


def beats_trivial(report: TaskReport) -> bool:
    """True when the model is better than the trivial baseline on every headline metric of its task."""
    for name, higher in HEADLINE[report.task]:
        model, trivial = report.model[name], report.trivial[name]
        if not (model > trivial if higher else model < trivial):
            return False
    return True


def _write_metrics(path: Path, reports: list[TaskReport]) -> None:
    content = {}
    for r in reports:
        content[r.task] = {"model": _finite(r.model), "trivial": _finite(r.trivial)}
        if r.single is not None:
            content[r.task]["single"] = _finite(r.single)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n"))


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if np.isfinite(v) else None) for k, v in metrics.items()}


def _atomic_save_image(image, path: Path) -> None:
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _check_writable(out_dir: Path) -> None:
    from polymax.engine.train import ensure_writable_dir

    ensure_writable_dir(out_dir, what="demo output folder")
    stale = out_dir / "metrics.json"
    if stale.exists():  # a previous complete run: its results are replaced once this run completes
        stale.unlink()


def _say(message: str) -> None:
    print(message, flush=True)


def settings_for(*, quick: bool, steps_scale: float = 1.0, size: int | None = None) -> DemoSettings:
    """QUICK or FULL, with the step count scaled (for shorter test runs) and an optional size."""
    base = QUICK if quick else FULL
    if steps_scale <= 0:
        raise UserError(f"--steps-scale must be positive, got {steps_scale}")
    if size is not None and (size < 33 or size > 513 or (size - 1) % 32):
        raise UserError(f"--size must be of the form 32k+1 between 33 and 513 (e.g. 65, 97, 129), got {size}")
    return replace(base, steps=max(1, round(base.steps * steps_scale)), size=size or base.size)
