"""Align-corners nearest-neighbour resizing: corners map to corners, the grid matches bilinear resizing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from polymax.geometry import nearest_indices, resize_nearest


def test_indices_keep_corners_and_round_the_align_corners_grid():
    assert nearest_indices(5, 9).tolist() == [0, 0, 1, 2, 2, 2, 3, 4, 4]  # i * 4 / 8, rounded half to even
    assert nearest_indices(9, 3).tolist() == [0, 4, 8]
    assert nearest_indices(7, 1).tolist() == [0]


def test_resize_nearest_agrees_with_bilinear_on_exact_grid_points():
    maps = torch.arange(5 * 5, dtype=torch.float32).view(1, 1, 5, 5)
    exact = F.interpolate(maps, size=(9, 9), mode="bilinear", align_corners=True)[..., ::2, ::2]
    assert torch.equal(resize_nearest(maps, (9, 9))[..., ::2, ::2], exact)
    labels = torch.randint(0, 3, (2, 4, 6))
    assert resize_nearest(labels, (4, 6)) is labels
