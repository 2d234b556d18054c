"""Shared helpers for the PolyMaX task-head tests: a ~0.4M-parameter config per task, a small synthetic batch,
BatchNorm calibration and a short training loop with before / after metrics."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from polymax.config.model import ModelConfig, TaskConfig
from polymax.data.collate import collate
from polymax.data.synthetic import SYNTH_MAX_DEPTH, SYNTH_MIN_DEPTH, SyntheticScenes
from polymax.inference.tta import predict_dense, semantic_labels
from polymax.metrics import DepthMetrics, NormalMetrics, SemanticMetrics
from polymax.presets.kmax import kmax_tiny_test
from polymax.structures import Targets

QUERIES = {"semantic": 6, "depth": 16, "normals": 8}


def tiny_config(name: str, architecture: str = "kmax") -> ModelConfig:
    """B's kmax_tiny_test trunk (6 synthetic classes) with one PolyMaX task, no drop path, no aux semantic branch."""
    base = kmax_tiny_test()
    task = TaskConfig(name=name, aux_semantic="none", min_depth=SYNTH_MIN_DEPTH, max_depth=SYNTH_MAX_DEPTH)
    return replace(base, preset=f"tiny_{architecture}_{name}", architecture=architecture, tasks=(task,),
                   kmax_decoder=replace(base.kmax_decoder, num_queries=QUERIES[name], drop_path_keep=1.0),
                   backbone=replace(base.backbone, drop_path_keep=1.0))


def synthetic_batch(count: int = 2, size: tuple[int, int] = (65, 65)) -> tuple[torch.Tensor, Targets]:
    batch = collate([SyntheticScenes(size=size, num_samples=count)[i] for i in range(count)])
    return batch.images, batch.targets


def calibrate_batch_norm(model: nn.Module, images: torch.Tensor) -> None:
    """Replace every BN's running statistics by the exact statistics of ``images`` (BN momentum is 0.01, so after
    a few steps the running stats still describe the initial weights and eval mode would be meaningless)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one pass = the batch's statistics
    model.train()
    with torch.no_grad():
        model(images)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def task_metric(model: nn.Module, name: str, images: torch.Tensor, targets: Targets) -> float:
    """Depth RMS (m), normal mean angle (°) or mIoU of ``model`` on the batch, in eval mode with calibrated BN."""
    calibrate_batch_norm(model, images)
    model.eval()
    output = predict_dense(model, images, task=name)    # the depth range: the model's task config
    model.train()
    if name == "depth":
        metric = DepthMetrics(min_depth=SYNTH_MIN_DEPTH, max_depth=SYNTH_MAX_DEPTH)
        metric.update(output, targets.depth)
        return metric.compute()["rms"]
    if name == "normals":
        metric = NormalMetrics()
        metric.update(output, targets.normals)
        return metric.compute()["mean"]
    metric = SemanticMetrics(num_classes=6)
    metric.update(semantic_labels(output), targets.semantic)
    return metric.compute()["miou"]


def train(model: nn.Module, criterion: nn.Module, images: torch.Tensor, targets: Targets, *, steps: int,
          lr: float = 1e-3) -> list[float]:
    """``steps`` AdamW steps on one batch; returns the loss of every step. ``criterion(run: TaskRun, targets)``
    reads the model's only task's run."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = criterion(model(images).run, targets).total
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


class OneTaskGraph:
    """Stands in for an OnnxRunner (no onnxruntime needed): not a TorchRunner, one task of a (multi-task) config.
    Running it is a test failure: every caller must refuse before reaching the graph."""

    fixed_size = None

    def __init__(self, config, task: str) -> None:
        self.config, self.task = config, task

    def __call__(self, images):
        raise AssertionError("a refused request must not reach the graph")
