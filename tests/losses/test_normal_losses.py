"""Normal losses: zero for perfect predictions, hand-computed values, invalid masking, NormalsCriterion."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from polymax.losses.normals import angular_loss, normal_l2_loss, valid_normals
from polymax.losses.polymax_criterion import NormalsCriterion
from polymax.structures import NormalsOutput, Targets, TaskRun


def normals_map(*vectors: tuple[float, float, float]) -> torch.Tensor:
    """(1, 3, 1, N) from N vectors."""
    return torch.tensor(vectors, dtype=torch.float32).T[None, :, None, :]


@pytest.mark.parametrize("loss", [normal_l2_loss, angular_loss])
def test_perfect_prediction_costs_zero(loss):
    target = F.normalize(torch.randn(2, 3, 5, 6), dim=1)
    target[0, :, 0, 0] = 0.0  # one invalid pixel
    pred = target.clone().requires_grad_(True)
    value = loss(pred, target, valid_normals(target))
    torch.testing.assert_close(value, torch.zeros(2), atol=1e-6, rtol=0)
    value.sum().backward()
    assert torch.isfinite(pred.grad).all()


def test_golden_values_and_masking():
    pred = normals_map((1, 0, 0), (1, 0, 0), (0, 0, 1), (0, 1, 0))
    target = normals_map((0, 1, 0), (-1, 0, 0), (0, 0, 0), (0, math.sqrt(0.5), math.sqrt(0.5)))
    valid = valid_normals(target)
    assert valid.tolist() == [[[True, True, False, True]]]
    # L2: ‖(1,−1,0)‖² = 2, ‖(2,0,0)‖² = 4, ‖(0, 1 − √½, −√½)‖² = 2 − √2; the invalid pixel is left out.
    expected_l2 = (2 + 4 + (2 - math.sqrt(2))) / 3
    torch.testing.assert_close(normal_l2_loss(pred, target, valid), torch.tensor([expected_l2]))
    # Angular: π/2 and π/4; the antiparallel pixel (cos = −1) is excluded from the truncated loss.
    torch.testing.assert_close(angular_loss(pred, target, valid), torch.tensor([(math.pi / 2 + math.pi / 4) / 2]))


def test_valid_normals_rejects_zero_and_non_finite_vectors():
    target = normals_map((0, 0, 0), (0, 0, 1), (float("nan"), 0, 1))
    assert valid_normals(target).tolist() == [[[False, True, False]]]


def test_criterion_supervises_every_output_after_renormalised_upsampling():
    # 5×5 input → 33×33 padded → 9×9 at stride 4; input pixels map to prediction rows / columns 0..1.
    up = torch.tensor([0.0, 0.0, 1.0])
    good = torch.zeros(1, 3, 9, 9)
    good[:, 0] = 1.0                             # garbage direction on the padding …
    good[:, :, :2, :2] = up[None, :, None, None]  # … the right one over the input
    aux = torch.zeros(1, 3, 3, 3)
    aux[:, 1] = 1.0
    blank = torch.zeros(1, 2, 9, 9)
    prediction = TaskRun(task="normals", final=NormalsOutput(mask_logits=blank, pixel_features=blank, normals=good),
                         aux=[NormalsOutput(mask_logits=blank, pixel_features=blank, normals=aux)])
    targets = Targets(normals=up[None, :, None, None].expand(1, 3, 5, 5).clone())
    terms = NormalsCriterion()(prediction, targets)
    assert terms.names() == ["normal_l2_loss", "aux_0normal_l2_loss"]
    assert float(terms["normal_l2_loss"]) == pytest.approx(0.0, abs=1e-6)
    assert float(terms["aux_0normal_l2_loss"]) == pytest.approx(2.0, rel=1e-5)  # perpendicular everywhere
    angular = NormalsCriterion(loss="angular", weight=2.0)(prediction, targets)
    assert float(angular["aux_0normal_angular_loss"]) == pytest.approx(math.pi, rel=1e-5)
