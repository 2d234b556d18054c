"""Depth losses: zero for perfect predictions, hand-computed values on tiny tensors, masking, DepthCriterion."""

from __future__ import annotations

import math

import pytest
import torch

from polymax.losses.depth import (
    charbonnier_loss,
    multiscale_gradient_loss,
    relative_squared_error,
    scale_invariant_log_error,
)
from polymax.losses.polymax_criterion import CHARBONNIER_DEPTH_WEIGHTS, DepthCriterion
from polymax.structures import DepthOutput, Targets, TaskRun

E = math.e
LOSSES = [scale_invariant_log_error, relative_squared_error, multiscale_gradient_loss, charbonnier_loss]


@pytest.mark.parametrize("loss", LOSSES)
def test_perfect_prediction_costs_zero_and_has_a_finite_gradient(loss):
    target = torch.rand(2, 1, 9, 11) * 5 + 0.5
    valid = torch.rand(2, 1, 9, 11) > 0.3
    pred = target.clone().requires_grad_(True)
    value = loss(pred, target, valid)
    assert value.shape == (2,)
    torch.testing.assert_close(value, torch.zeros(2), atol=1e-6, rtol=0)
    value.sum().backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("loss", LOSSES)
def test_invalid_pixels_do_not_count_and_an_empty_image_costs_zero(loss):
    target = torch.rand(2, 6, 6) * 3 + 1
    valid = torch.ones(2, 6, 6, dtype=torch.bool)
    valid[:, :, 3:] = False
    valid[1] = False
    pred = target.clone()
    pred[:, :, 3:] = 100.0          # garbage where invalid
    target_with_holes = torch.where(valid, target, torch.zeros_like(target))  # GT 0 = missing
    value = loss(pred, target_with_holes, valid)
    torch.testing.assert_close(value, torch.zeros(2), atol=1e-6, rtol=0)


def test_silog_golden_value_and_scale_invariance():
    # d = ln p − ln g = [0, 1, 2] → mean d² = 5/3, mean d = 1 → 5/3 − 1 = 2/3 (λ = 1, no sqrt).
    target = torch.tensor([[[1.0, 2.0, 0.5, 7.0]]])
    pred = torch.tensor([[[1.0, 2.0 * E, 0.5 * E**2, 123.0]]])
    valid = torch.tensor([[[True, True, True, False]]])
    torch.testing.assert_close(scale_invariant_log_error(pred, target, valid), torch.tensor([2 / 3]))
    torch.testing.assert_close(scale_invariant_log_error(3.7 * pred, target, valid), torch.tensor([2 / 3]))


def test_relative_squared_error_golden_value():
    # ((2 − 1) / 2)² = 0.25, ((4 − 5) / 4)² = 0.0625 → sqrt(mean) = sqrt(0.15625)
    target = torch.tensor([[2.0, 4.0, 0.0]])[None]
    pred = torch.tensor([[1.0, 5.0, 3.0]])[None]
    valid = target > 0
    torch.testing.assert_close(relative_squared_error(pred, target, valid), torch.tensor([math.sqrt(0.15625)]))


def test_multiscale_gradient_golden_values():
    target = torch.ones(1, 3, 3)
    residual = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    pred = torch.exp(residual)[None]
    valid = torch.ones(1, 3, 3, dtype=torch.bool)
    # Scale 1: |Δx| sums to 1 + 2 = 3, |Δy| to 2 + 1 = 3 over 9 pixels; scale 2 sees [[0, 1], [2, 0]]: 6 / 4.
    torch.testing.assert_close(multiscale_gradient_loss(pred, target, valid, num_scales=1), torch.tensor([6 / 9]))
    torch.testing.assert_close(multiscale_gradient_loss(pred, target, valid, num_scales=2),
                               torch.tensor([6 / 9 + 6 / 4]))
    # Pixel (0, 2) invalid: pairs touching it vanish. Scale 1: 2 + 2 over 8; scale 2: 2 + 2 over 3.
    valid[0, 0, 2] = False
    torch.testing.assert_close(multiscale_gradient_loss(pred, target, valid, num_scales=2),
                               torch.tensor([4 / 8 + 4 / 3]))


def test_charbonnier_golden_value():
    eps = 1e-3
    target = torch.tensor([[[1.0, 2.0, 5.0, 0.0]]])
    pred = torch.tensor([[[4.0, 2.0, 1.0, 9.0]]])
    expected = ((math.sqrt(9 + eps**2) - eps) + 0.0 + (math.sqrt(16 + eps**2) - eps)) / 3
    torch.testing.assert_close(charbonnier_loss(pred, target, target > 0, epsilon=eps), torch.tensor([expected]))


def test_losses_are_per_image():
    target = torch.ones(2, 1, 2)
    pred = torch.stack([torch.tensor([[1.0, E]]), torch.tensor([[1.0, 1.0]])])
    valid = torch.ones(2, 1, 2, dtype=torch.bool)
    torch.testing.assert_close(scale_invariant_log_error(pred, target, valid), torch.tensor([0.25, 0.0]))


def _prediction(depth: torch.Tensor, aux: list[torch.Tensor]) -> TaskRun:
    """A depth run: final depth (B, 1, h, w) and one auxiliary output per map of ``aux``."""
    blank = lambda d: torch.zeros(d.shape[0], 2, *d.shape[2:])
    output = lambda d: DepthOutput(mask_logits=blank(d), pixel_features=blank(d), depth=d)
    return TaskRun(task="depth", final=output(depth), aux=[output(a) for a in aux])


def test_criterion_upsamples_to_the_targets_ignores_padding_and_supervises_every_output():
    # A 9×13 input is padded to 33×33; stride 4 → 9×9 predictions; input pixels map to prediction rows 0..2 and
    # columns 0..3 exactly (align_corners). Put the right depth there and garbage on the padding.
    final = torch.full((1, 1, 9, 9), 50.0)
    final[..., :3, :4] = 2.0
    aux = torch.full((1, 1, 3, 3), 50.0)      # stride 16 over 33: input pixels lie within [0, 0.75] × [0, 0.75]
    aux[..., :2, :2] = 2.0
    aux_far = torch.full((1, 1, 3, 3), 3.0)
    targets = Targets(depth=torch.full((1, 9, 13), 2.0))
    criterion = DepthCriterion(min_depth=1e-3, max_depth=80.0)
    terms = criterion(_prediction(final, [aux, aux_far]), targets)
    assert terms.names() == [prefix + name for prefix in ("", "aux_0", "aux_1") for name in (
        "depth_silog_loss", "depth_relative_squared_loss", "depth_gradient_loss")]
    for prefix in ("", "aux_0"):
        assert float(terms[prefix + "depth_relative_squared_loss"]) == pytest.approx(0.0, abs=1e-6)
        assert float(terms[prefix + "depth_gradient_loss"]) == pytest.approx(0.0, abs=1e-6)
    # Off by a constant factor 1.5: SILog is blind to it, the relative error is |2 − 3| / 2 = 0.5.
    assert float(terms["aux_1depth_silog_loss"]) == pytest.approx(0.0, abs=1e-6)
    assert float(terms["aux_1depth_relative_squared_loss"]) == pytest.approx(0.5, rel=1e-5)


def test_criterion_masks_missing_and_out_of_range_depth_and_uses_the_chosen_recipe():
    pred = torch.full((1, 1, 5, 5), 2.0)
    depth = torch.full((1, 17, 17), 2.0)
    depth[0, :4] = 0.0      # missing
    depth[0, 10:] = 90.0    # beyond max_depth
    criterion = DepthCriterion(min_depth=1e-3, max_depth=80.0, weights=CHARBONNIER_DEPTH_WEIGHTS)
    terms = criterion(_prediction(pred, []), Targets(depth=depth))
    assert terms.names() == ["depth_charbonnier_loss"]
    assert float(terms.total) == pytest.approx(0.0, abs=1e-6)
    depth[0, 5, 5] = 3.0    # one of the 6 × 17 valid pixels off by 1 m
    expected = (math.sqrt(1 + 1e-6) - 1e-3) / 102
    assert float(criterion(_prediction(pred, []), Targets(depth=depth)).total) == pytest.approx(expected, rel=1e-5)
