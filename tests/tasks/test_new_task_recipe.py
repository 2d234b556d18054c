"""The recipe of docs/tasks.md, proved: a new dense task ("edges": is this pixel on a class boundary?) is one task
class plus its head and loss, all in this file. Registered in TASKS, it builds next to the semantic task on one
trunk, trains, evaluates, predicts, and keeps the task contract."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from polymax.build import build_criterion, build_model
from polymax.config.model import ModelConfig, TaskConfig
from polymax.data import build_dataset
from polymax.data.collate import collate
from polymax.data.synthetic import SYNTH_INFO
from polymax.geometry import Geometry, padded_size
from polymax.inference.evaluate import evaluate
from polymax.inference.outputs import write_outputs
from polymax.inference.predictor import Predictor
from polymax.losses.terms import LossTerms
from polymax.model.heads.cluster_values import ClusterMLP, mix_over_clusters
from polymax.presets import PRESETS
from polymax.structures import MaskPrediction, Result, Targets, TaskOutput, TaskRun
from polymax.tasks import TASKS
from polymax.tasks.base import LabelField, Picture, Task


# -- the new task: output and result types, head, loss, metric, task ------------------------------------------------
@dataclass
class EdgesOutput(TaskOutput):
    """edges: (B, 1, h, w) probability that a pixel lies on a class boundary; cluster_edges: (B, K)."""

    edges: Tensor | None = None
    cluster_edges: Tensor | None = None


@dataclass
class EdgesResult(Result):
    """edges: (H, W) bool."""

    edges: np.ndarray | None = None


class EdgesHead(nn.Module):
    """Cluster prediction: each cluster k gets an edge probability e_k; edges(x) = Σ_k P_k(x) · e_k."""

    def __init__(self, *, in_channels: int, num_predictions: int) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(ClusterMLP(in_channels=in_channels, out_channels=1) for _ in range(num_predictions))

    def forward(self, layer: MaskPrediction, index: int) -> EdgesOutput:
        values = torch.sigmoid(self.mlps[index](layer.cluster_features).float())      # (B, K, 1)
        return EdgesOutput(mask_logits=layer.mask_logits, pixel_features=layer.pixel_features,
                           edges=mix_over_clusters(layer.mask_logits, values), cluster_edges=values[..., 0])


def boundaries(semantic: Tensor, ignore_label: int) -> Tensor:
    """(B, H, W) class ids → (B, H, W) float: 1 where a 4-neighbour has another (non-void) class."""
    edge = torch.zeros_like(semantic, dtype=torch.bool)
    for a, b, view in ((semantic[:, 1:], semantic[:, :-1], (slice(None), slice(1, None))),
                       (semantic[:, :, 1:], semantic[:, :, :-1], (slice(None), slice(None), slice(1, None)))):
        differs = (a != b) & (a != ignore_label) & (b != ignore_label)
        edge[view] |= differs
    return edge.float()


class EdgesCriterion(nn.Module):
    def __init__(self, ignore_label: int) -> None:
        super().__init__()
        self.ignore_label = ignore_label

    def forward(self, run: TaskRun, targets: Targets) -> LossTerms:
        target = boundaries(targets.semantic, self.ignore_label)
        values = {}
        for prefix, output in [("", run.final)] + [(f"aux_{i}", a) for i, a in enumerate(run.aux)]:
            edges = F.interpolate(output.edges, size=target.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
            values[prefix + "edge_bce_loss"] = F.binary_cross_entropy(edges.clamp(1e-6, 1 - 1e-6), target)
        return LossTerms(values)


class EdgesMetrics:
    def __init__(self, ignore_label: int) -> None:
        self.ignore_label, self.intersection, self.union = ignore_label, 0, 0

    def update(self, result: EdgesResult, targets: Targets, index: int) -> None:
        truth = boundaries(targets.semantic[index: index + 1], self.ignore_label)[0].bool().numpy()
        self.intersection += int((result.edges & truth).sum())
        self.union += int((result.edges | truth).sum())

    def compute(self) -> dict[str, float]:
        return {"edge_iou": self.intersection / max(self.union, 1)}


class EdgesTask(Task):
    name = "edges"
    labels = (LabelField("semantic", "ids"),)
    output_type = EdgesOutput
    result_type = EdgesResult
    loss_section = "loss"                       # no options of its own
    export_names = ("mask_logits", "edges")

    def build_head(self, config, task, *, num_predictions, num_queries):
        return EdgesHead(in_channels=config.kmax_decoder.hidden, num_predictions=num_predictions)

    def build_criterion(self, config, task, options):
        return EdgesCriterion(config.dataset.ignore_label)

    def build_metrics(self, config, task):
        return EdgesMetrics(config.dataset.ignore_label)

    def build_decoder(self, config, task):
        def decode(output: EdgesOutput, geometry: Geometry) -> EdgesResult:
            edges = geometry.dense(output.edges)[0, 0] > 0.5
            return EdgesResult(task=self.name, size=geometry.original, edges=edges.cpu().numpy())
        return decode

    def perfect_output(self, targets, config, task, *, num_queries, confidence=50.0):
        edges = boundaries(targets.semantic, config.dataset.ignore_label)[:, None]
        logits = torch.cat([edges, 1 - edges], dim=1).repeat(1, num_queries // 2, 1, 1)[:, :num_queries]
        return EdgesOutput(mask_logits=(2 * logits - 1) * confidence, pixel_features=logits, edges=edges,
                           cluster_edges=torch.zeros(edges.shape[0], num_queries))

    def pictures(self, result: EdgesResult, config: ModelConfig) -> list[Picture]:
        return [Picture("edges", "edges", Image.fromarray(result.edges.astype(np.uint8) * 255))]

    def tta_values(self, output: TaskOutput) -> Tensor:
        return output.edges.float()


# -- the proof --------------------------------------------------------------------------------------------------------
@pytest.fixture
def with_edges(monkeypatch):
    monkeypatch.setitem(TASKS, "edges", EdgesTask())


def two_task_config() -> ModelConfig:
    """The tiny semantic trunk (K = C = 6) with an edges head on its own group of 8 clusters."""
    base = PRESETS["polymax_tiny_synth_semantic"]()
    edges = TaskConfig(name="edges", num_queries=8, aux_semantic="none")
    return replace(base, preset="semantic_plus_edges", tasks=(*base.tasks, edges))


def _batch(count: int, seed: int):
    samples = list(build_dataset("synth", split="train", size=(33, 33), num_samples=count, seed=seed))
    return samples, collate(samples, ignore_label=SYNTH_INFO.ignore_label, label_divisor=SYNTH_INFO.label_divisor)


def test_a_new_task_keeps_the_contract(with_edges):
    config = two_task_config()
    task = config.task("edges")
    _, batch = _batch(2, seed=0)
    perfect = TASKS["edges"].perfect_output(batch.targets, config, task, num_queries=8)
    loss = build_criterion(config, "edges")(TaskRun(task="edges", final=perfect), batch.targets)
    assert float(loss.total) < 1e-3
    geometry = Geometry(original=(33, 33), content=(33, 33), network=padded_size((33, 33)))
    metrics = TASKS["edges"].build_metrics(config, task)
    decode = TASKS["edges"].build_decoder(config, task)
    for index in range(2):
        one = EdgesOutput(**{k: v[index: index + 1] for k, v in perfect.__dict__.items()})
        metrics.update(decode(one, geometry), batch.targets, index)
    assert metrics.compute()["edge_iou"] == 1.0


def test_a_new_task_trains_evaluates_and_predicts_beside_semantic(with_edges, tmp_path):
    torch.manual_seed(0)
    config = two_task_config()
    model = build_model(config)
    assert model.tasks == ("semantic", "edges")
    assert model.kmax_decoder.task_centres["edges"].shape == (8, config.kmax_decoder.hidden)
    criteria = {name: build_criterion(config, name) for name in model.tasks}
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    _, batch = _batch(8, seed=1)
    losses = {name: [] for name in model.tasks}
    for _ in range(30):
        output = model(batch.images, task=model.tasks)                  # one trunk pass for both tasks
        terms = {name: criteria[name](output[name], batch.targets).total for name in model.tasks}
        optimiser.zero_grad()
        sum(terms.values()).backward()
        optimiser.step()
        for name, value in terms.items():
            losses[name].append(float(value.detach()))
    for name, values in losses.items():
        assert min(values[-5:]) < 0.9 * values[0], (name, values)
    val = build_dataset("synth", split="val", size=(33, 33), num_samples=4)
    scores = evaluate(model, dataset=val)
    assert set(scores) >= {"semantic/miou", "edges/edge_iou"}
    result = Predictor(model, task="edges", optimise=False).predict(np.zeros((20, 30, 3), dtype=np.uint8))
    assert isinstance(result, EdgesResult) and result.edges.shape == (20, 30)
    written = write_outputs(result, config=config, out_dir=tmp_path, name="room")
    assert [p.name for p in written] == ["room_edges.png"]
