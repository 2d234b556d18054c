"""Evaluation helpers: flip TTA (normals' n_x negated), resize to the ground truth, depth clamping."""

from __future__ import annotations

import math

import pytest
import torch
from polymax_task_helpers import tiny_config
from torch import nn

from polymax.build import build_model
from polymax.config.model import TaskConfig
from polymax.inference.tta import predict_dense, semantic_labels
from polymax.model.meta_arch import KMaX
from polymax.structures import DepthOutput, ModelOutput, NormalsOutput, SegmentationOutput, TaskRun
from polymax.tasks.depth import clamp_depth
from polymax.tasks.normals import flip_normals


class ColumnRampModel(nn.Module):
    """Pads like KMaX and predicts at stride 1 from the padded column position only (not flip-equivariant):
    depth 1 + ramp, semantic logits (5·ramp, 0), normals ∝ (1, 0, 1); ramp = column / (W_pad − 1)."""

    def __init__(self, constant_depth: float | None = None) -> None:
        super().__init__()
        self.constant_depth = constant_depth

    def forward(self, images: torch.Tensor, task: str) -> ModelOutput:
        x = KMaX.preprocess(images)
        batch, _, height, width = x.shape
        ramp = torch.linspace(0, 1, width).expand(batch, 1, height, width)
        depth = 1 + ramp if self.constant_depth is None else torch.full_like(ramp, self.constant_depth)
        normals = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(batch, 3, height, width) / math.sqrt(2)
        logits = torch.cat([5 * ramp, torch.zeros_like(ramp)], dim=1)
        outputs = {"semantic": SegmentationOutput(mask_logits=logits, pixel_features=x),
                   "depth": DepthOutput(mask_logits=logits, pixel_features=x, depth=depth),
                   "normals": NormalsOutput(mask_logits=logits, pixel_features=x, normals=normals)}
        outputs["panoptic"] = outputs["semantic"]
        return ModelOutput({task: TaskRun(task=task, final=outputs[task])})


def test_flip_normals_mirrors_and_negates_x():
    normals = torch.randn(1, 3, 2, 4)
    flipped = flip_normals(normals)
    torch.testing.assert_close(flipped[:, 0], -normals[:, 0].flip(-1))
    torch.testing.assert_close(flipped[:, 1:], normals[:, 1:].flip(-1))
    torch.testing.assert_close(flip_normals(flipped), normals)


def test_flip_tta_golden_values_for_a_position_only_model():
    images = torch.rand(1, 3, 20, 45) * 255        # width 45 → padded 65
    model = ColumnRampModel()
    width, padded = 45, 65
    depth = predict_dense(model, images, task="depth", flip=True)
    # Column j sees ramp j/64 and, flipped back, (44 − j)/64: the average is the same for every column.
    torch.testing.assert_close(depth, torch.full((1, 1, 20, 45), 1 + (width - 1) / (2 * (padded - 1))))
    normals = predict_dense(model, images, task="normals", flip=True)
    # (1, 0, 1)/√2 and its mirror (−1, 0, 1)/√2 average to (0, 0, 1/√2), renormalised to (0, 0, 1).
    torch.testing.assert_close(normals, torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 20, 45))
    probabilities = predict_dense(model, images, task="semantic", flip=True)
    columns = torch.arange(width, dtype=torch.float32)
    mirrored_columns = width - 1 - columns
    expected = 0.5 * (torch.sigmoid(5 * columns / (padded - 1)) + torch.sigmoid(5 * mirrored_columns / (padded - 1)))
    torch.testing.assert_close(probabilities[0, 0], expected.expand(20, width))
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(1, 20, 45))
    # Without flipping, the ramp survives (cropped to the input, not stretched over it).
    plain = predict_dense(model, images, task="depth")
    torch.testing.assert_close(plain[0, 0, 0], 1 + columns / (padded - 1))


@pytest.mark.parametrize("kind", ["semantic", "depth", "normals"])
def test_a_flipped_sample_gives_the_flipped_prediction(kind):
    model = build_model(tiny_config(kind)).eval()
    images = torch.rand(2, 3, 37, 50) * 255         # odd size: the model pads on the right
    mirrored = predict_dense(model, images.flip(-1), task=kind, flip=True)
    original = predict_dense(model, images, task=kind, flip=True)
    expected = flip_normals(original) if kind == "normals" else original.flip(-1)
    torch.testing.assert_close(mirrored, expected, atol=1e-5, rtol=1e-5)
    if kind == "semantic":
        assert torch.equal(semantic_labels(mirrored), semantic_labels(original).flip(-1))


def test_resize_to_the_ground_truth_keeps_normals_unit_and_clamps_depth():
    model = build_model(tiny_config("normals")).eval()
    images = torch.rand(1, 3, 24, 32) * 255
    normals = predict_dense(model, images, task="normals", flip=True, output_size=(48, 64))
    assert normals.shape == (1, 3, 48, 64)
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(1, 48, 64))
    far = predict_dense(ColumnRampModel(constant_depth=100.0), images, task="depth", output_size=(30, 40),
                        task_config=TaskConfig(name="depth", min_depth=1e-3, max_depth=10.0))
    assert far.shape == (1, 1, 30, 40) and bool((far == 10.0).all())
    with pytest.raises(ValueError, match="no flip test-time augmentation"):
        predict_dense(ColumnRampModel(), images, task="panoptic")


def test_clamp_depth_handles_non_finite_values():
    depth = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, 5.0, 12.0])
    assert clamp_depth(depth, 0.5, 10.0).tolist() == [0.5, 10.0, 0.5, 0.5, 5.0, 10.0]
