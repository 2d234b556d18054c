"""Per-class results: hand-computed IoU / PQ / AP per class, the tables `polymax eval --per-class` prints and
writes, and their agreement with the summary (the summary is the mean over the classes that are measured)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import polymax
from polymax.cli import main
from polymax.config.model import DatasetInfo
from polymax.inference.class_tables import format_class_table
from polymax.metrics.class_table import class_table
from polymax.structures import SegmentationResult, Targets
from polymax.tasks.panoptic import PanopticTaskMetrics
from polymax.tasks.semantic import SemanticTaskMetrics

INFO = DatasetInfo(name="toy", class_names=("road", "sky", "car"), thing_classes=(2,), colors=((0, 0, 0),) * 3,
                   ignore_label=255, label_divisor=1000)


class _Config:
    dataset = INFO


def _targets(semantic: np.ndarray, panoptic: np.ndarray) -> Targets:
    return Targets(semantic=torch.from_numpy(semantic)[None], panoptic=torch.from_numpy(panoptic)[None])


def test_semantic_and_panoptic_per_class_by_hand():
    # Ground truth: left half road (class 0), right half a car (class 2, instance 1); sky never occurs.
    truth = np.zeros((4, 4), dtype=np.int64)
    truth[:, 2:] = 2
    panoptic_truth = np.where(truth == 2, 2001, 0)
    # Prediction: road except one car column: road IoU 8/12, car IoU 4/8; the car segment's IoU 0.5 is no match.
    predicted = np.zeros((4, 4), dtype=np.int32)
    predicted[:, 3] = 2
    result = SegmentationResult(task="panoptic", size=(4, 4), semantic=predicted,
                                panoptic=np.where(predicted == 2, 2001, 0).astype(np.int64))
    semantic_metrics, panoptic_metrics = SemanticTaskMetrics(_Config), PanopticTaskMetrics(_Config)
    semantic_metrics.update(result, _targets(truth, panoptic_truth), 0)
    panoptic_metrics.update(result, _targets(truth, panoptic_truth), 0)
    iou = semantic_metrics.per_class()
    assert iou.names == ("road", "sky", "car") and iou.columns == ("iou",)
    assert iou.values["iou"][0] == pytest.approx(8 / 12) and math.isnan(iou.values["iou"][1])
    assert iou.values["iou"][2] == pytest.approx(4 / 8)
    table = panoptic_metrics.per_class()
    rows = {row["name"]: row for row in table.rows()}
    # road: prediction 12 px, truth 8 px, overlap 8 → IoU 8/12 > 0.5: a match, PQ = SQ = 2/3, RQ = 1.
    assert rows["road"]["pq"] == pytest.approx(2 / 3) and rows["road"]["rq"] == 1.0 and rows["road"]["tp"] == 1
    # car: IoU exactly 0.5 is not a match: one FP, one FN, PQ 0; sky: nothing to measure.
    assert (rows["car"]["tp"], rows["car"]["fp"], rows["car"]["fn"], rows["car"]["pq"]) == (0, 1, 1, 0.0)
    assert rows["sky"]["pq"] is None and rows["car"]["isthing"] and not rows["road"]["isthing"]
    summary = panoptic_metrics.compute()
    assert summary["pq"] == pytest.approx(np.mean([2 / 3, 0.0]))
    text = format_class_table(table)
    assert "road" in text and "66.67" in text and "n/a" in text and "thing" in text


def test_instance_per_class_ap_by_hand():
    pytest.importorskip("pycocotools", reason="instance AP needs pycocotools (the coco extra)")
    from polymax.metrics import InstanceMetrics

    metric = InstanceMetrics(thing_classes=(1, 2), label_divisor=1000)
    target = np.zeros((1, 8, 8), dtype=np.int64)
    target[0, :4, :4] = 1001                      # class 1: found exactly → AP 1
    target[0, 4:, 4:] = 2001                      # class 2: missed → AP 0
    prediction = {"masks": (target[0] == 1001)[None], "labels": np.array([1]), "scores": np.array([0.9])}
    metric.update([prediction], target)
    per_class = metric.per_class()
    assert per_class["ap"].tolist() == pytest.approx([1.0, 0.0])
    assert per_class["ap50"].tolist() == pytest.approx([1.0, 0.0])
    assert metric.compute()["ap"] == pytest.approx(0.5)
    table = class_table("instance", per_class, names=("bg", "person", "car"), classes=metric.thing_classes)
    assert [row["name"] for row in table.rows()] == ["person", "car"]


def test_eval_prints_and_writes_per_class_tables(tmp_path, capsys):
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    polymax.save_pretrained(polymax.build_model("kmax_tiny_test"), model_dir)
    report = tmp_path / "report.json"
    assert main(["eval", "--model", str(model_dir), "--limit", "1", "--per-class", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "panoptic per class:" in printed and "cylinder" in printed
    content = json.loads(report.read_text())
    rows = content["per_class"]["panoptic"]
    assert [row["name"] for row in rows] == ["floor", "wall", "ceiling", "box", "sphere", "cylinder"]
    measured = [row["pq"] for row in rows if row["pq"] is not None]
    assert measured and content["summary"]["pq"] == pytest.approx(np.mean(measured))
    ious = [row["iou"] for row in rows if row["iou"] is not None]
    assert content["summary"]["miou"] == pytest.approx(np.mean(ious))
    # --json: the tables inside the one printed object.
    assert main(["eval", "--model", str(model_dir), "--limit", "1", "--json", "--per-class"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["per_class"]["panoptic"]) == 6 and "pq" in shown
