"""NormalMetrics: hand-computed angles, a per-pixel loop reference, streaming, invalid masking, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polymax.metrics import NormalMetrics

KEYS = ("mean", "median", "rms", "within_11_25", "within_22_5", "within_30")


def to_batch(vectors: list[tuple[float, float, float]]) -> torch.Tensor:
    """(1, 3, 1, N) from N vectors."""
    return torch.tensor(vectors, dtype=torch.float64).T.reshape(1, 3, 1, len(vectors))


def loop_reference(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    errors = []
    for image in range(target.shape[0]):
        for row in range(target.shape[2]):
            for col in range(target.shape[3]):
                g = [float(v) for v in target[image, :, row, col]]
                if g == [0.0, 0.0, 0.0]:
                    continue
                p = [float(v) for v in pred[image, :, row, col]]
                cosine = sum(a * b for a, b in zip(p, g)) / (math.hypot(*p) * math.hypot(*g))
                errors.append(math.degrees(math.acos(min(1.0, max(-1.0, cosine)))))
    errors.sort()
    n = len(errors)
    median = errors[n // 2] if n % 2 else 0.5 * (errors[n // 2 - 1] + errors[n // 2])
    return {
        "mean": sum(errors) / n, "median": median, "rms": math.sqrt(sum(e * e for e in errors) / n),
        "within_11_25": sum(e < 11.25 for e in errors) / n, "within_22_5": sum(e < 22.5 for e in errors) / n,
        "within_30": sum(e < 30 for e in errors) / n,
    }


def test_hand_computed_angles():
    twenty = math.radians(20)
    target = to_batch([(0, 0, 2), (0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 0)])
    pred = to_batch([(0, 0, 5), (1, 0, 1), (0, 1, 0), (0, math.cos(twenty), math.sin(twenty)), (1, 0, 0)])
    metric = NormalMetrics()
    metric.update(pred, target)
    result = metric.compute()
    # Angles 0°, 45°, 90°, 20°; the last pixel has an all-zero GT and is invalid.
    assert metric.num_pixels == 4
    assert result["mean"] == pytest.approx((0 + 45 + 90 + 20) / 4)
    assert result["median"] == pytest.approx((20 + 45) / 2)  # even count: mean of the two middle values
    assert result["rms"] == pytest.approx(math.sqrt((0 + 45**2 + 90**2 + 20**2) / 4))
    assert result["within_11_25"] == 1 / 4
    assert result["within_22_5"] == 2 / 4
    assert result["within_30"] == 2 / 4


def test_zero_prediction_scores_ninety_degrees():
    metric = NormalMetrics()
    metric.update(to_batch([(0, 0, 0)]), to_batch([(0, 0, 1)]))
    assert metric.compute()["mean"] == pytest.approx(90.0)


def test_random_matches_loop_reference():
    rng = np.random.default_rng(4)
    target = rng.normal(size=(2, 3, 7, 9))
    target[:, :, rng.random((7, 9)) < 0.25] = 0.0
    pred = target + 0.6 * rng.normal(size=target.shape)  # un-normalised predictions
    metric = NormalMetrics()
    metric.update(torch.from_numpy(pred).float(), torch.from_numpy(target).float())
    expected = loop_reference(pred.astype(np.float32), target.astype(np.float32))
    result = metric.compute()
    for key in ("mean", "rms", "within_11_25", "within_22_5", "within_30"):
        assert result[key] == pytest.approx(expected[key], rel=1e-9), key
    # The median comes from float32-stored angles (documented): exact up to float32 rounding.
    assert result["median"] == pytest.approx(expected["median"], rel=1e-6)


def test_perfect_prediction():
    target = torch.nn.functional.normalize(torch.randn(2, 3, 5, 6), dim=1)
    metric = NormalMetrics()
    metric.update(3.0 * target, target)
    result = metric.compute()
    for key in ("mean", "median", "rms"):
        assert result[key] == pytest.approx(0.0, abs=1e-4), key
    for key in ("within_11_25", "within_22_5", "within_30"):
        assert result[key] == 1.0


def test_streaming_equals_single_update_and_reset():
    target = torch.randn(5, 3, 6, 7)
    target[1, :, :3] = 0.0
    pred = target + 0.8 * torch.randn(5, 3, 6, 7)
    whole = NormalMetrics()
    whole.update(pred, target)
    streamed = NormalMetrics()
    for start, stop in ((0, 1), (1, 4), (4, 5)):
        streamed.update(pred[start:stop].numpy(), target[start:stop].numpy())
    assert streamed.num_pixels == whole.num_pixels == 5 * 42 - 21
    for key in KEYS:
        assert streamed.compute()[key] == pytest.approx(whole.compute()[key], rel=1e-12), key
    streamed.reset()
    assert streamed.num_pixels == 0 and math.isnan(streamed.compute()["median"])


def test_histogram_median_is_within_half_a_bin():
    target = torch.randn(3, 3, 10, 10)
    pred = target + torch.randn(3, 3, 10, 10)
    exact, binned = NormalMetrics(), NormalMetrics(exact_median=False, median_bin_degrees=0.01)
    for metric in (exact, binned):
        metric.update(pred, target)
    assert abs(binned.compute()["median"] - exact.compute()["median"]) <= 0.005 + 1e-9
    assert binned.compute()["mean"] == pytest.approx(exact.compute()["mean"], rel=1e-12)


def test_bad_inputs_raise_clear_errors():
    metric = NormalMetrics()
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\).*\(1, 3, 4, 5\)"):
        metric.update(torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"3 channels.*\(1, 4, 4, 4\)"):
        metric.update(torch.ones(1, 4, 4, 4), torch.ones(1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"rank 4.*\(3, 4, 4\)"):
        metric.update(torch.ones(3, 4, 4), torch.ones(3, 4, 4))
