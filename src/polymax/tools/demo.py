"""`polymax demo`: train small PolyMaX models on the built-in synthetic rooms, evaluate them on held-out
rooms against trivial baselines, and show what each cluster learned.

For each task (semantic, depth, normals, and kMaX panoptic) the demo

1. trains ``polymax_tiny_synth_<task>`` with the regular training engine (checkpoints in
   ``OUT/runs/<mode>/<task>/``; re-running the demo after an interruption continues from them), then
   re-estimates the BatchNorm statistics on training rooms (:mod:`polymax.engine.precise_bn`: a short run
   leaves BN's slow running averages behind the weights),
2. evaluates it on held-out validation rooms with the project's metrics,
3. computes the same metrics for a trivial baseline fitted on training rooms — the mean training depth
   per pixel, the most frequent normal, the majority class,
4. writes ``OUT/<task>.png`` (input, ground truth, prediction, and the per-cluster probability maps with
   each cluster's value, as in the PolyMaX paper's Fig. 8) and ``OUT/models/<task>/`` (a model directory
   that ``polymax predict --model`` reads).

``OUT/metrics.json`` is written last and atomically: if it exists, the run that wrote it finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from polymax.errors import UserError
from polymax.io.pretrained import atomic_write

TASKS = ("semantic", "depth", "normals", "panoptic")
# The headline metric of each task and whether higher is better (used for the summary and the checks).
HEADLINE = {"semantic": (("miou", True),), "depth": (("abs_rel", False), ("rms", False)),
            "normals": (("mean", False),), "panoptic": (("pq", True), ("miou", True))}


class DemoInterrupted(UserError):
    """Ctrl-C or SIGTERM during training: progress is saved, metrics.json is not written."""


@dataclass(frozen=True)
class DemoSettings:
    """size: square training / evaluation resolution (32k+1); steps / batch_size / lr: training;
    eval_samples: held-out rooms per task; baseline_samples: training rooms the trivial baselines see."""

    size: int
    steps: dict[str, int]
    batch_size: int
    lr: float
    warmup_steps: int
    eval_samples: int
    baseline_samples: int = 64
    picture_samples: int = 3


# Step counts per task follow what each task needs to clearly beat its trivial baseline (measured on a
# 2-core CPU): panoptic (Hungarian matching, confident masks for mask-wise merging) and depth (the per-pixel
# mean depth of similar rooms is a strong constant) need the most.
QUICK = DemoSettings(size=65, steps={"semantic": 100, "depth": 300, "normals": 100, "panoptic": 500},
                     batch_size=8, lr=2e-3, warmup_steps=20, eval_samples=32)
FULL = DemoSettings(size=65, steps={"semantic": 400, "depth": 800, "normals": 400, "panoptic": 1200},
                    batch_size=8, lr=1e-3, warmup_steps=50, eval_samples=100)


@dataclass
class TaskReport:
    task: str
    model: dict[str, float]
    trivial: dict[str, float]
    picture: Path
    model_dir: Path
    seconds: float


def run_demo(out_dir: Path, *, settings: DemoSettings, tasks: tuple[str, ...] = TASKS, mode: str = "quick",
             progress: bool = True, seed: int = 0) -> list[TaskReport]:
    """Train, evaluate and picture every task in ``tasks``; returns one report per task."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise UserError(f"unknown demo task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    _check_writable(out_dir)
    reports = []
    for task in tasks:
        started = time.perf_counter()
        _say(f"[{task}] training polymax_tiny_synth_{task} for {settings.steps[task]} steps "
             f"at {settings.size}x{settings.size}")
        model = _train(task, out_dir / "runs" / mode / task, settings=settings, progress=progress, seed=seed)
        model_dir = out_dir / "models" / task
        model.save_pretrained(model_dir)
        val = _synth("val", settings.size, settings.eval_samples)
        model_metrics = _evaluate(model, val)
        trivial_metrics = trivial_baseline_metrics(model.config, val, _synth("train", settings.size,
                                                                            settings.baseline_samples))
        picture = out_dir / f"{task}.png"
        _atomic_save_image(task_picture(model, val, count=settings.picture_samples), picture)
        reports.append(TaskReport(task=task, model=model_metrics, trivial=trivial_metrics, picture=picture,
                                  model_dir=model_dir, seconds=time.perf_counter() - started))
        _say(f"[{task}] " + _headline_line(reports[-1]))
    _write_metrics(out_dir / "metrics.json", reports)
    return reports


def _train(task: str, run_dir: Path, *, settings: DemoSettings, progress: bool, seed: int):
    """Train with the regular engine; an earlier (interrupted or finished) run in ``run_dir`` is resumed."""
    from polymax.config.train import load_config
    from polymax.engine.assemble import build_collate, build_train_set, build_training_model
    from polymax.engine.criterion import build_criterion
    from polymax.engine.precise_bn import recalibrate_batch_norm
    from polymax.engine.train import fit
    from polymax.io.pretrained import load_model

    size = settings.size
    config = load_config(None, overrides=[
        f"model.preset=polymax_tiny_synth_{task}", f"data.crop_size=[{size},{size}]", "data.workers=0",
        f"data.batch_size={settings.batch_size}", f"steps={settings.steps[task]}", f"optim.lr={settings.lr}",
        f"optim.warmup_steps={settings.warmup_steps}", "augment.min_scale=0.75", "augment.max_scale=1.25",
        "augment.copy_paste=false", "augment.autoaugment_magnitude=0.5", "loss.inst_disc_samples=1024",
        f"checkpoint_every={max(settings.steps[task] // 4, 1)}", "log_every=10", f"seed={seed}",
        f"progress={str(progress).lower()}", "tensorboard=false", f"out_dir={run_dir}", "device=cpu"])
    resume = (run_dir / "last").is_dir()
    model = build_training_model(config)
    result = fit(config, model=model, criterion=build_criterion(model.config, config.loss),
                 train_set=build_train_set(config, model.config), collate_fn=build_collate(model.config),
                 resume=resume)
    if result.interrupted is not None:  # Ctrl-C / SIGTERM: the engine saved a checkpoint; stop the demo here
        raise DemoInterrupted(f"interrupted while training {task}; the checkpoint in {run_dir / 'last'} is kept — "
                              "run the same command again to continue")
    model = load_model(run_dir / "last")
    # A short run leaves BN's slow running statistics (momentum 0.01) behind the weights: re-estimate them.
    rooms = _synth("train", size, settings.batch_size * 8)
    images = (torch.stack([rooms[i].image for i in range(start, start + settings.batch_size)]).float()
              for start in range(0, len(rooms), settings.batch_size))
    recalibrate_batch_norm(model, images)
    return model


def _synth(split: str, size: int, count: int):
    from polymax.data import build_dataset
    return build_dataset("synth", split=split, size=(size, size), num_samples=count)


def _evaluate(model, dataset) -> dict[str, float]:
    from polymax.inference.evaluate import evaluate
    return evaluate(model, dataset=dataset, batch_size=1)


# --------------------------------------------------------------------------------------------- baselines
def trivial_baseline_metrics(config, val, train) -> dict[str, float]:
    """The task's metrics for a constant predictor fitted on ``train``: per-pixel mean depth, the most
    frequent normal direction, the majority class (as one segment for panoptic)."""
    from polymax.inference.evaluate import build_metrics

    metrics = build_metrics(config)
    kind, info = config.task.kind, config.dataset
    if kind == "depth":
        constant = torch.stack([s.depth for s in train]).mean(dim=0)           # (H, W) mean per pixel
    elif kind == "normals":
        constant = _most_frequent_normal(torch.stack([s.normals for s in train]))  # (3,)
    else:
        counts = torch.bincount(torch.cat([s.semantic.flatten() for s in train]), minlength=info.num_classes)
        constant = int(counts[: info.num_classes].argmax())
    for sample in val:
        if kind == "depth":
            metrics["depth"].update(constant[None], sample.depth[None])
        elif kind == "normals":
            normals = constant[:, None, None].expand_as(sample.normals)
            metrics["normals"].update(normals[None], sample.normals[None])
        else:
            semantic = torch.full_like(sample.semantic, constant)
            metrics["semantic"].update(semantic[None], sample.semantic[None])
            if "panoptic" in metrics:
                # One segment of the majority class (instance 1 if it is a thing).
                instance = 1 if constant in info.thing_classes else 0
                panoptic = semantic * info.label_divisor + instance
                metrics["panoptic"].update(panoptic[None], sample.panoptic[None])
    results: dict[str, float] = {}
    for metric in metrics.values():
        results.update({k: v for k, v in metric.compute().items() if not k.startswith("iou_")})
    return results


def _most_frequent_normal(normals: torch.Tensor, bins: int = 16) -> torch.Tensor:
    """(N, 3, H, W) unit normals → the mean direction of the most populated cell of a bins³ grid."""
    flat = normals.permute(1, 0, 2, 3).reshape(3, -1)
    flat = flat[:, flat.abs().sum(dim=0) > 0]
    cells = ((flat + 1) / 2 * bins).long().clamp_(0, bins - 1)
    keys = cells[0] * bins * bins + cells[1] * bins + cells[2]
    mode = torch.bincount(keys).argmax()
    return torch.nn.functional.normalize(flat[:, keys == mode].mean(dim=1), dim=0)


# --------------------------------------------------------------------------------------------- pictures
def task_picture(model, dataset, *, count: int = 3):
    """One PIL image: for `count` held-out rooms input | ground truth | prediction, then the per-cluster
    probability maps of the first room, each captioned with its cluster's value."""
    from PIL import Image

    from polymax.inference import visualize
    from polymax.inference.predictor import Predictor

    config, info = model.config, model.config.dataset
    kind = config.task.kind
    predictor = Predictor(model, resize="none")
    rows, first = [], None
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        image = sample.image.permute(1, 2, 0).numpy()
        result = predictor.predict(image, probabilities=index == 0)
        first = first or (sample, result)
        truth, guess = _maps_for_picture(kind, info, config, sample, result)
        truth_caption = "ground truth"
        if kind == "depth":
            valid = sample.depth[sample.depth > 0]
            truth_caption += f" ({float(valid.min()):.1f}-{float(valid.max()):.1f} m)"
        rows += [("input", image), (truth_caption, truth), ("prediction", guess)]
    title = f"polymax_tiny_synth_{kind}: held-out synthetic rooms"
    grid = visualize.panel(rows, columns=3, tile_height=150, title=title)
    sample, result = first
    captions = _cluster_captions(model, sample, kind)
    order = sorted(range(len(captions)), key=lambda k: captions[k][0])
    # One shared colour scale up to the largest probability, so weakly used clusters stay comparable.
    top = max(float(result.probabilities.max()), 1e-6)
    tiles = [(captions[k][1], visualize.ramp(result.probabilities[k], 0.0, top)) for k in order]
    clusters = visualize.panel(tiles, columns=8, tile_height=70,
                               title=f"per-cluster probability maps P = softmax_K(mask logits) of the first room "
                                     f"({len(tiles)} clusters; blue = 0, yellow = {top:.2f})")
    canvas = Image.new("RGB", (max(grid.width, clusters.width), grid.height + clusters.height), (255, 255, 255))
    canvas.paste(grid, (0, 0))
    canvas.paste(clusters, (0, grid.height))
    return canvas


def _maps_for_picture(kind, info, config, sample, result):
    from polymax.inference import visualize

    if kind == "depth":
        lo, hi = float(sample.depth[sample.depth > 0].min()), float(sample.depth.max())
        return (visualize.colorize_depth(sample.depth.numpy(), min_depth=lo, max_depth=hi),
                visualize.colorize_depth(result.depth, min_depth=lo, max_depth=hi))
    if kind == "normals":
        return visualize.colorize_normals(sample.normals.numpy()), visualize.colorize_normals(
            np.ascontiguousarray(result.normals.transpose(2, 0, 1)))
    if kind == "panoptic":
        common = dict(colors=info.colors, num_classes=info.num_classes, label_divisor=info.label_divisor,
                      ignore_label=info.ignore_label)
        return (visualize.colorize_panoptic(sample.panoptic.numpy(), **common),
                visualize.colorize_panoptic(result.panoptic, **common))
    common = dict(colors=info.colors, num_classes=info.num_classes, ignore_label=info.ignore_label)
    return (visualize.colorize_semantic(sample.semantic.numpy(), **common),
            visualize.colorize_semantic(result.semantic, **common))


@torch.no_grad()
def _cluster_captions(model, sample, kind: str) -> list[tuple[float, str]]:
    """(sort key, caption) per cluster: its bin depth, its unit normal, or its class."""
    prediction = model(sample.image[None].float())
    names = model.config.dataset.class_names
    if kind == "depth":
        values = prediction.cluster_depth[0].tolist()
        return [(v, f"{v:.2f} m") for v in values]
    if kind == "normals":
        vectors = prediction.cluster_normals[0].tolist()
        return [(-v[1], "({:+.1f},{:+.1f},{:+.1f})".format(*v)) for v in vectors]
    if kind == "semantic":  # K = C: cluster i is class i
        return [(i, names[i]) for i in range(len(names))]
    probabilities = torch.softmax(prediction.class_logits[0].float(), dim=-1)[:, :-1]   # void column dropped
    confidence, classes = probabilities.max(dim=-1)
    return [(int(c) - float(p), f"{names[int(c)]} {float(p):.2f}") for c, p in zip(classes, confidence)]


# --------------------------------------------------------------------------------------------- reporting
def _headline_line(report: TaskReport) -> str:
    parts = [f"{name} {report.model.get(name, float('nan')):.3f} (trivial {report.trivial.get(name, float('nan')):.3f})"
             for name, _ in HEADLINE[report.task]]
    return ", ".join(parts) + f" — {report.seconds:.0f} s"


def summary_table(reports: list[TaskReport]) -> str:
    """The terminal summary: task, metric, model, trivial baseline, and whether the model is better."""
    lines = [f"{'task':10}{'metric':10}{'model':>10}{'trivial':>10}  better"]
    for report in reports:
        for name, higher in HEADLINE[report.task]:
            model, trivial = report.model.get(name, float("nan")), report.trivial.get(name, float("nan"))
            better = model > trivial if higher else model < trivial
            lines.append(f"{report.task:10}{name:10}{model:10.3f}{trivial:10.3f}  {'yes' if better else 'NO'}")
    return "\n".join(lines)


def beats_trivial(report: TaskReport) -> bool:
    """True when the model is better than the trivial baseline on every headline metric of its task."""
    for name, higher in HEADLINE[report.task]:
        model, trivial = report.model[name], report.trivial[name]
        if not (model > trivial if higher else model < trivial):
            return False
    return True


def _write_metrics(path: Path, reports: list[TaskReport]) -> None:
    content = {r.task: {"model": _finite(r.model), "trivial": _finite(r.trivial)} for r in reports}
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
    """QUICK or FULL, with the step counts scaled (for shorter test runs) and an optional size."""
    base = QUICK if quick else FULL
    if steps_scale <= 0:
        raise UserError(f"--steps-scale must be positive, got {steps_scale}")
    if size is not None and (size < 33 or size > 513 or (size - 1) % 32):
        raise UserError(f"--size must be of the form 32k+1 between 33 and 513 (e.g. 65, 97, 129), got {size}")
    steps = {task: max(1, round(n * steps_scale)) for task, n in base.steps.items()}
    return replace(base, steps=steps, size=size or base.size)
