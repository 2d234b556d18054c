"""DepthMetrics: hand-computed values, a per-pixel loop reference, streaming, masking, crop and input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polymax.metrics import DepthMetrics

KEYS = ("rms", "abs_rel", "sq_rel", "log10", "rms_log", "silog", "delta1", "delta2", "delta3")


def loop_reference(pred: np.ndarray, target: np.ndarray, min_depth: float, max_depth: float,
                   crop: tuple[int, int, int, int] | None = None, clamp: bool = True) -> dict[str, float]:
    """Plain per-pixel loops over each image, then the mean over images with at least one valid pixel."""
    per_image = []
    for image in range(target.shape[0]):
        errors = {key: [] for key in ("abs", "sq", "sq_rel", "abs_rel", "log_sq", "log10", "log_diff")}
        inliers = [0, 0, 0]
        count = 0
        for row in range(target.shape[1]):
            for col in range(target.shape[2]):
                g = float(target[image, row, col])
                p = float(pred[image, row, col])
                if not (min_depth < g < max_depth):
                    continue
                if crop is not None and not (crop[0] <= row < crop[1] and crop[2] <= col < crop[3]):
                    continue
                if clamp:
                    p = min(max(p, min_depth), max_depth)
                count += 1
                errors["abs_rel"].append(abs(g - p) / g)
                errors["sq_rel"].append((g - p) ** 2 / g)
                errors["sq"].append((g - p) ** 2)
                errors["log_sq"].append((math.log(g) - math.log(p)) ** 2)
                errors["log10"].append(abs(math.log10(g) - math.log10(p)))
                errors["log_diff"].append(math.log(p) - math.log(g))
                worst_ratio = max(g / p, p / g)
                for i in range(3):
                    inliers[i] += worst_ratio < 1.25 ** (i + 1)
        if count == 0:
            continue
        d = np.array(errors["log_diff"])
        per_image.append({
            "abs_rel": np.mean(errors["abs_rel"]), "sq_rel": np.mean(errors["sq_rel"]),
            "rms": math.sqrt(np.mean(errors["sq"])), "rms_log": math.sqrt(np.mean(errors["log_sq"])),
            "log10": np.mean(errors["log10"]), "silog": 100 * math.sqrt(max(np.var(d), 0.0)),
            "delta1": inliers[0] / count, "delta2": inliers[1] / count, "delta3": inliers[2] / count,
        })
    return {key: float(np.mean([m[key] for m in per_image])) for key in KEYS}


def test_hand_computed_two_images_are_averaged_per_image():
    # Image 0 valid pixels (g, p): (1, 1), (2, 1), (4, 5); the 4th pixel has g = 0 (invalid, p = 3 ignored).
    # Image 1 is predicted perfectly (all metrics 0, deltas 1), so every value is half of image 0's.
    target = torch.tensor([[[1.0, 2.0], [4.0, 0.0]], [[2.0, 2.0], [2.0, 2.0]]])
    pred = torch.tensor([[[1.0, 1.0], [5.0, 3.0]], [[2.0, 2.0], [2.0, 2.0]]])
    metric = DepthMetrics(min_depth=1e-3, max_depth=10.0)
    metric.update(pred, target)
    result = metric.compute()
    log_d = [0.0, -math.log(2), math.log(1.25)]  # ln p − ln g
    image0 = {
        "abs_rel": (0 + 1 / 2 + 1 / 4) / 3,
        "sq_rel": (0 + 1 / 2 + 1 / 4) / 3,  # (g−p)²/g = 0, 1/2, 1/4
        "rms": math.sqrt((0 + 1 + 1) / 3),
        "rms_log": math.sqrt(sum(d * d for d in log_d) / 3),
        "log10": (0 + math.log10(2) + math.log10(1.25)) / 3,
        "silog": 100 * math.sqrt(sum(d * d for d in log_d) / 3 - (sum(log_d) / 3) ** 2),
        # max ratios 1, 2, 1.25: 1.25 is NOT < 1.25 (strict); 1.25² = 1.5625; 1.25³ ≈ 1.953 < 2.
        "delta1": 1 / 3, "delta2": 2 / 3, "delta3": 2 / 3,
    }
    perfect = {key: (1.0 if key.startswith("delta") else 0.0) for key in KEYS}
    for key in KEYS:
        assert result[key] == pytest.approx((image0[key] + perfect[key]) / 2, rel=1e-12, abs=1e-12), key
    assert metric.num_images == 2
    # Per-image averaging differs from pooling all 7 valid pixels: pooled RMS would be sqrt(2/7).
    assert result["rms"] != pytest.approx(math.sqrt(2 / 7))


def test_random_matches_loop_reference_with_clamping_and_crop():
    rng = np.random.default_rng(1)
    target = rng.uniform(0.0, 12.0, size=(3, 9, 11)).astype(np.float32)
    target[rng.random(target.shape) < 0.2] = 0.0
    pred = rng.uniform(-1.0, 14.0, size=target.shape).astype(np.float32)  # some out of [min, max] → clamped
    crop = (1, 8, 2, 10)
    metric = DepthMetrics(min_depth=0.5, max_depth=10.0, eval_crop=crop)
    metric.update(pred, target)
    expected = loop_reference(pred, target, 0.5, 10.0, crop=crop)
    result = metric.compute()
    for key in KEYS:
        assert result[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key


def test_perfect_prediction():
    target = torch.rand(2, 6, 7) * 9 + 0.5
    metric = DepthMetrics()
    metric.update(target.clone(), target)
    result = metric.compute()
    for key in ("rms", "abs_rel", "sq_rel", "log10", "rms_log", "silog"):
        assert result[key] == pytest.approx(0.0, abs=1e-6), key
    for key in ("delta1", "delta2", "delta3"):
        assert result[key] == 1.0


def test_streaming_equals_single_update_and_per_image_mean():
    generator = torch.Generator().manual_seed(3)
    target = torch.rand(5, 8, 8, generator=generator) * 9
    pred = target * (1 + 0.3 * torch.randn(5, 8, 8, generator=generator))
    whole = DepthMetrics()
    whole.update(pred, target)
    streamed = DepthMetrics()
    for start, stop in ((0, 2), (2, 3), (3, 5)):
        streamed.update(pred[start:stop], target[start:stop])
    per_image = []
    for index in range(5):
        single = DepthMetrics()
        single.update(pred[index : index + 1], target[index : index + 1])
        per_image.append(single.compute())
    for key in KEYS:
        assert streamed.compute()[key] == pytest.approx(whole.compute()[key], rel=1e-12)
        assert whole.compute()[key] == pytest.approx(np.mean([m[key] for m in per_image]), rel=1e-12)
    streamed.reset()
    assert streamed.num_images == 0 and math.isnan(streamed.compute()["rms"])


def test_invalid_range_is_masked_and_empty_images_are_skipped():
    # Valid needs min < g < max strictly: g = 0, g = min, g = max and g above max are all ignored.
    target = torch.tensor([[[2.0, 0.0, 1e-3, 10.0, 11.0]], [[0.0, 0.0, 0.0, 0.0, 0.0]]])
    pred = torch.tensor([[[2.0, 5.0, 5.0, 5.0, 5.0]], [[1.0, 1.0, 1.0, 1.0, 1.0]]])
    metric = DepthMetrics(min_depth=1e-3, max_depth=10.0)
    metric.update(pred, target)
    assert metric.num_images == 1 and metric.num_skipped_images == 1
    assert metric.compute()["rms"] == 0.0 and metric.compute()["delta1"] == 1.0


def test_predictions_are_clamped_by_default_and_optionally_not():
    target = torch.tensor([[[9.0, 2.0, 2.0]]])
    pred = torch.tensor([[[30.0, float("nan"), -1.0]]])  # → 10, min_depth, min_depth
    clamped = DepthMetrics(min_depth=0.1, max_depth=10.0)
    clamped.update(pred, target)
    assert clamped.compute()["abs_rel"] == pytest.approx((1 / 9 + 1.9 / 2 + 1.9 / 2) / 3)
    unclamped = DepthMetrics(min_depth=0.1, max_depth=10.0, clamp_predictions=False)
    unclamped.update(torch.tensor([[[30.0]]]), torch.tensor([[[9.0]]]))
    assert unclamped.compute()["abs_rel"] == pytest.approx(21 / 9)
    with pytest.raises(ValueError, match="non-positive"):
        unclamped.update(pred, target)


def test_nyu_crop_only_counts_pixels_inside_the_crop():
    target = torch.full((1, 480, 640), 3.0)
    pred = torch.full((1, 480, 640), 3.0)
    pred[0, :45] = 9.0  # rows above the crop
    pred[0, :, 601:] = 9.0  # columns right of the crop
    metric = DepthMetrics(eval_crop="nyu")
    metric.update(pred, target)
    assert metric.compute()["rms"] == 0.0
    pred[0, 470, 600] = 6.0  # last pixel inside [45:471, 41:601]
    metric.reset()
    metric.update(pred, target)
    assert metric.compute()["rms"] == pytest.approx(math.sqrt(9 / (426 * 560)))
    # The same crop as an explicit tuple, with negative (from-the-end) bounds as UniDepth writes it.
    explicit = DepthMetrics(eval_crop=(45, -9, 41, -39))
    explicit.update(pred[:, None], target[:, None])  # (B, 1, H, W) is accepted too
    assert explicit.compute()["rms"] == pytest.approx(metric.compute()["rms"], rel=1e-12)
    # On other sizes the "nyu" crop does not apply: the whole image is evaluated.
    small = DepthMetrics(eval_crop="nyu")
    small.update(torch.tensor([[[3.0, 9.0]]]), torch.tensor([[[3.0, 3.0]]]))
    assert small.compute()["abs_rel"] == pytest.approx(1.0)


def test_bad_inputs_raise_clear_errors():
    metric = DepthMetrics()
    with pytest.raises(ValueError, match=r"\(2, 4, 5\).*\(2, 4, 6\)"):
        metric.update(torch.ones(2, 4, 5), torch.ones(2, 4, 6))
    with pytest.raises(ValueError, match=r"rank 3.*\(4, 5\)"):
        metric.update(torch.ones(4, 5), torch.ones(4, 5))
    with pytest.raises(ValueError, match="eval_crop"):
        DepthMetrics(eval_crop="kitti")
    with pytest.raises(ValueError, match="selects no pixel"):
        DepthMetrics(eval_crop=(5, 5, 0, 3)).update(torch.ones(1, 6, 6), torch.ones(1, 6, 6))
    with pytest.raises(ValueError, match="min_depth"):
        DepthMetrics(min_depth=5.0, max_depth=1.0)
