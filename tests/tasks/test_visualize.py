"""Pictures: colour maps are exact where they must be, invalid pixels are black, panels compose."""

from __future__ import annotations

import numpy as np

from polymax.tasks import visualize


def test_ramp_ends_and_nan():
    rgb = visualize.ramp(np.array([0.0, 1.0, np.nan]), 0.0, 1.0)
    assert tuple(rgb[0]) == (13, 8, 135)
    assert tuple(rgb[1]) == (240, 249, 33)
    assert tuple(rgb[2]) == (0, 0, 0)


def test_depth_invalid_pixels_are_black_and_order_is_monotone_in_brightness():
    depth = np.array([[0.0, 1.0, 5.0, 10.0]], dtype=np.float32)
    rgb = visualize.colorize_depth(depth, min_depth=1.0, max_depth=10.0)
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    brightness = rgb[0, 1:].astype(int).sum(axis=1)
    assert brightness[0] < brightness[1] < brightness[2]


def test_normals_mapping_and_invalid():
    normals = np.zeros((3, 1, 2), dtype=np.float32)
    normals[:, 0, 0] = (0.0, -1.0, 0.0)
    rgb = visualize.colorize_normals(normals)
    assert tuple(rgb[0, 0]) == (128, 0, 128)
    assert tuple(rgb[0, 1]) == (0, 0, 0)


def test_semantic_and_panoptic_colours():
    semantic = np.array([[0, 1, 255]])
    rgb = visualize.colorize_semantic(semantic, colors=[(10, 20, 30), (40, 50, 60)], num_classes=2)
    assert tuple(rgb[0, 0]) == (10, 20, 30) and tuple(rgb[0, 2]) == (0, 0, 0)
    panoptic = np.array([[1001, 1001, 1002, 1002]])
    prgb = visualize.colorize_panoptic(panoptic, colors=[(0, 0, 0), (200, 200, 200)], num_classes=2,
                                       label_divisor=1000)
    assert not np.array_equal(prgb[0, 0], prgb[0, 3])  # two instances of one class look different


def test_palette_extends_distinct_colours():
    table = visualize.palette(40, colors=[(1, 2, 3)])
    assert tuple(table[0]) == (1, 2, 3)
    assert len({tuple(c) for c in table}) == 40


def test_probability_grid_and_panel_sizes():
    grid = visualize.probability_grid(np.random.rand(5, 8, 10), columns=4, gap=2)
    assert grid.shape == (2 * 8 + 2, 4 * 10 + 3 * 2, 3)
    image = visualize.panel([("a", grid), ("b", grid)], tile_height=40, title="t")
    assert image.height > 40 and image.width > 2 * grid.shape[1] * 40 / grid.shape[0]
    from polymax.tasks import keys

    assert keys.legend(["x", "y"], [(1, 1, 1)]).height > 0
