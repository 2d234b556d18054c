"""Joint augmentation: image and every label stay aligned; depth stays metric; normals follow the geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polymax.data.augment import (
    TrainAugmentation,
    crop,
    hflip,
    panoptic_copy_paste,
    random_pad_and_crop,
    random_scale,
    resize,
    rotate,
    scale_choices,
)
from polymax.data.autoaugment import apply_op, apply_simple_policy, enhance_factor
from polymax.data.sample import Sample

DIVISOR = 1000
NORMALS = torch.nn.functional.normalize(torch.tensor([[0.3, -0.5, 0.8], [-0.6, 0.2, 0.77], [0.1, 0.9, 0.42],
                                                      [0.7, 0.1, 0.7]]), dim=1)


def blocky_sample(height: int = 32, width: int = 48, block: int = 8) -> Sample:
    """Classes 0..3 in blocks; the image's red channel encodes the class (40·c + 20), so alignment can be read
    back from any pixel whose neighbourhood is one block."""
    rows = torch.arange(height)[:, None] // block
    cols = torch.arange(width)[None, :] // block
    classes = ((rows * 3 + cols * 5) % 4).long()
    image = torch.stack([40.0 * classes + 20, torch.full_like(classes, 50.0), 200.0 - 10 * classes]).to(torch.uint8)
    instance = (cols % 2 + 1) * (classes == 3)
    return Sample(image=image, semantic=classes.clone(), panoptic=classes * DIVISOR + instance,
                  depth=(classes + 1).float(), normals=NORMALS[classes].permute(2, 0, 1).contiguous(),
                  crowd=classes == 2, name="blocks")


def interior(labels: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3×3 neighbourhood has a single label (bilinear image values there are exact)."""
    padded = torch.nn.functional.pad(labels[None, None].double(), (1, 1, 1, 1), mode="replicate")
    high = torch.nn.functional.max_pool2d(padded, 3, 1)[0, 0]
    low = -torch.nn.functional.max_pool2d(-padded, 3, 1)[0, 0]
    return high == low


def assert_aligned(sample: Sample, depth_factor: float = 1.0, flipped: bool = False) -> None:
    labels = sample.semantic
    inside = interior(labels) & (labels != 255)
    assert inside.sum() > 20
    classes = labels[inside]
    assert torch.allclose(sample.image[0][inside].float(), 40.0 * classes + 20, atol=1e-3)
    assert torch.equal(sample.panoptic[inside] // DIVISOR, classes)
    assert torch.allclose(sample.depth[inside], (classes + 1).float() / depth_factor, rtol=1e-5)
    expected = NORMALS[classes]
    if flipped:
        expected = expected * torch.tensor([-1.0, 1.0, 1.0])
    assert torch.allclose(sample.normals[:, inside].T, expected, atol=1e-5)
    assert torch.equal(sample.crowd[inside], classes == 2)


def test_scale_choices_match_deeplab2() -> None:
    assert np.allclose(scale_choices(0.5, 2.0, 0.1), np.arange(5, 21) / 10)
    assert np.allclose(scale_choices(0.3, 1.7, 0.1), np.arange(3, 18) / 10)
    assert np.allclose(scale_choices(1.0, 1.0, 0.1), [1.0])


@pytest.mark.parametrize("scale", [0.5, 1.5, 2.0])
def test_random_scale_divides_depth_and_keeps_alignment(scale: float) -> None:
    out = random_scale(blocky_sample(), np.random.default_rng(0), min_scale=scale, max_scale=scale, step=0.1)
    assert out.image.shape[-2:] == (int(32 * scale), int(48 * scale))
    assert out.semantic.dtype == torch.int64 and out.image.dtype == torch.float32
    assert_aligned(out, depth_factor=scale)
    assert set(out.semantic.unique().tolist()) <= {0, 1, 2, 3}  # nearest: no invented classes


def test_pad_and_crop_fill_values_and_alignment() -> None:
    out = random_pad_and_crop(blocky_sample(), np.random.default_rng(3), (40, 56), label_divisor=DIVISOR)
    assert out.image.shape == (3, 40, 56)
    padded = out.semantic == 255
    assert padded.sum() == 40 * 56 - 32 * 48
    assert torch.all(out.image[:, padded] == 127.5)
    assert torch.all(out.panoptic[padded] == 255 * DIVISOR) and torch.all(out.depth[padded] == 0)
    assert torch.all(out.normals[:, padded] == 0) and not out.crowd[padded].any()
    assert_aligned(out)
    small = random_pad_and_crop(blocky_sample(), np.random.default_rng(1), (9, 13))
    assert small.image.shape == (3, 9, 13) and not (small.semantic == 255).any()
    assert_aligned(small)


def test_flip_negates_normal_x_and_keeps_panoptic() -> None:
    original = blocky_sample()
    out = hflip(original)
    assert torch.equal(out.panoptic, original.panoptic.flip(-1))
    assert torch.equal(out.normals[0], -original.normals[0].flip(-1))
    assert torch.equal(out.normals[1:], original.normals[1:].flip(-1))
    assert_aligned(out, flipped=True)


def test_rotation_turns_content_counter_clockwise_and_rotates_normals() -> None:
    size = 41
    coords = torch.arange(size, dtype=torch.float32) - size // 2
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    radius = torch.sqrt(x**2 + y**2).clamp_min(1e-6)
    # Radial in-plane normals: a field that is unchanged by a rotation only if its vectors rotate too.
    normals = torch.stack([x / radius * 0.6, y / radius * 0.6, torch.full_like(x, 0.8)])
    semantic = torch.zeros(size, size, dtype=torch.int64)
    semantic[size // 2, size // 2 + 10] = 1   # a marker 10 px right of the centre
    sample = Sample(image=torch.zeros(3, size, size, dtype=torch.uint8), semantic=semantic,
                    depth=torch.full((size, size), 3.0), normals=normals)
    out = rotate(sample, 90.0)
    marker = (out.semantic == 1).nonzero().tolist()
    assert marker == [[size // 2 - 10, size // 2]]  # right of centre → above centre
    ring = (radius > 3) & (radius < 15)
    assert torch.allclose(out.normals[:, ring], normals[:, ring], atol=1e-4)
    out = rotate(sample, 30.0)
    ring = (radius > 4) & (radius < 15)
    assert torch.allclose(out.normals[:, ring], normals[:, ring], atol=0.2)  # nearest sampling of a smooth field
    corners = out.semantic == 255
    assert corners.any() and torch.all(out.depth[corners] == 0) and torch.all(out.normals[:, corners] == 0)
    assert torch.all(out.depth[~corners] == 3.0)


def test_resize_uses_nearest_for_labels() -> None:
    out = resize(blocky_sample(), (16, 24), depth_scale=0.5)
    assert torch.equal(out.semantic, blocky_sample().semantic[::2, ::2])
    assert torch.allclose(out.depth, blocky_sample().depth[::2, ::2] / 0.5)


def test_autoaugment_ops_follow_tf_definitions() -> None:
    image = torch.tensor([[[10.0, 100.0], [200.0, 250.0]]]).expand(3, 2, 2).clone()
    assert enhance_factor(10) == pytest.approx(1.9) and enhance_factor(0) == pytest.approx(0.1)
    assert torch.equal(apply_op("Brightness", image, 10), torch.floor((image * 1.9).clamp(0, 255)))
    threshold = int(7 / 10 * 256)  # 179
    solarized = apply_op("Solarize", image, 7)
    assert threshold == 179 and solarized[0].tolist() == [[10.0, 100.0], [55.0, 5.0]]
    grey = torch.full((3, 4, 4), 77.0)
    assert torch.equal(apply_op("Contrast", grey, 3), grey) and torch.equal(apply_op("Color", grey, 3), grey)
    sharp = apply_op("Sharpness", torch.rand(3, 6, 6).mul(255).floor(), 10)
    assert sharp.shape == (3, 6, 6)
    two_levels = torch.cat([torch.full((3, 16, 32), 50.0), torch.full((3, 16, 32), 60.0)], dim=1)
    # 512 pixels per level: step = (1024 - 512) // 255 = 2; lut[v] = (cumsum[v - 1] + 1) // 2.
    assert apply_op("Equalize", two_levels, 0).unique().tolist() == [0.0, 255.0]
    tiny = two_levels[:, 15:17, :4]  # step 0 → unchanged, as in TF / PIL
    assert torch.equal(apply_op("Equalize", tiny, 0), tiny)


def test_autoaugment_is_deterministic_and_scaled() -> None:
    image = torch.randint(0, 256, (3, 8, 8)).float()
    first = [apply_simple_policy(image, np.random.default_rng(s)) for s in range(20)]
    again = [apply_simple_policy(image, np.random.default_rng(s)) for s in range(20)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert any(not torch.equal(a, image) for a in first)  # some sub-policy fires within 20 draws


def test_copy_paste_pastes_segments_with_fresh_instance_ids() -> None:
    target = blocky_sample()
    source = blocky_sample()
    source.panoptic = source.panoptic.flip(0)
    source.semantic = source.semantic.flip(0)
    source.image = source.image.flip(1)
    source.depth, source.normals, source.crowd = source.depth.flip(0), source.normals.flip(1), source.crowd.flip(0)
    source.panoptic[:4] = 255 * DIVISOR  # void rows are never pasted
    out = panoptic_copy_paste(target, source, np.random.default_rng(0), thing_classes=(3,), label_divisor=DIVISOR,
                              stuff_prob=0.0)
    pasted = source.semantic == 3
    pasted[:4] = False
    assert torch.equal(out.semantic[pasted], source.semantic[pasted])
    assert torch.equal(out.image[:, pasted], source.image[:, pasted].float())
    new_ids = out.panoptic[pasted] % DIVISOR
    assert new_ids.min() > int((target.panoptic % DIVISOR).max())  # no merge with the target's instances
    untouched = ~pasted
    assert torch.equal(out.panoptic[untouched], target.panoptic[untouched])
    assert_aligned(out)


@pytest.mark.parametrize("options", [
    dict(min_scale=0.5, max_scale=2.0, autoaugment=None, flip_prob=1.0),
    dict(min_scale=0.8, max_scale=1.2, flip_prob=0.0, border_crop=(2, 22, 4, 28)),
])
def test_composed_pipeline_is_aligned_and_replayable(options) -> None:
    augment = TrainAugmentation(crop_size=(17, 21), label_divisor=DIVISOR, **options)
    first = augment(blocky_sample(), np.random.default_rng(7))
    second = augment(blocky_sample(), np.random.default_rng(7))
    assert torch.equal(first.image, second.image) and torch.equal(first.semantic, second.semantic)
    assert first.image.shape == (3, 17, 21)
    # The drawn scale is the only depth change: recover it from any valid pixel and check all of them.
    valid = (first.semantic != 255) & interior(first.semantic)
    factor = float(((first.semantic[valid] + 1).float() / first.depth[valid])[0])
    assert_aligned(first, depth_factor=factor, flipped=options["flip_prob"] == 1.0)


def test_depth_recipe_rotation_and_colour_jitter() -> None:
    augment = TrainAugmentation(crop_size=(20, 28), rotation_degrees=2.5, rotation_prob=1.0, color_jitter_prob=1.0,
                                flip_prob=0.0, label_divisor=DIVISOR)
    out = augment(blocky_sample(), np.random.default_rng(0))
    assert out.image.shape == (3, 20, 28) and out.image.min() >= 0 and out.image.max() <= 255
    valid = out.depth > 0
    assert torch.equal(out.depth[valid], (out.semantic[valid] + 1).float())  # rotation keeps depth values


def test_crop_is_consistent() -> None:
    out = crop(blocky_sample(), 3, 5, 10, 11)
    assert out.image.shape == (3, 10, 11) and out.normals.shape == (3, 10, 11) and out.depth.shape == (10, 11)
    assert math.isclose(float(out.depth[0, 0]), float(blocky_sample().depth[3, 5]))


def test_autoaugment_magnitude_scale_changes_strength() -> None:
    image = torch.randint(0, 256, (3, 16, 16)).float()
    differs = [not torch.equal(apply_simple_policy(image, np.random.default_rng(s)),
                               apply_simple_policy(image, np.random.default_rng(s), magnitude_scale=0.2))
               for s in range(30)]
    assert any(differs)


def test_pipeline_with_copy_paste_and_autoaugment_keeps_labels_aligned() -> None:
    augment = TrainAugmentation(crop_size=(24, 30), min_scale=0.8, max_scale=1.2, autoaugment="simple",
                                copy_paste=True, thing_classes=(3,), label_divisor=DIVISOR, flip_prob=0.0)
    for seed in range(3):
        out = augment(blocky_sample(), np.random.default_rng(seed), paste_source=blocky_sample())
        assert out.image.shape == (3, 24, 30)
        valid = (out.semantic != 255) & interior(out.semantic)
        factors = ((out.semantic[valid] + 1).float() / out.depth[valid]).mul(1000).round().unique()
        assert len(factors) <= 2  # the target's scale and the pasted source's scale
        assert torch.equal(out.panoptic[valid] // DIVISOR, out.semantic[valid])


def test_rotation_of_a_non_square_image() -> None:
    height, width = 21, 41
    semantic = torch.zeros(height, width, dtype=torch.int64)
    semantic[10, 25] = 1   # 5 px right of the centre
    semantic[7, 20] = 2    # 3 px above the centre
    out = rotate(Sample(image=torch.zeros(3, height, width, dtype=torch.uint8), semantic=semantic), 90.0)
    assert (out.semantic == 1).nonzero().tolist() == [[5, 20]]   # right → up
    assert (out.semantic == 2).nonzero().tolist() == [[10, 17]]  # up → left
