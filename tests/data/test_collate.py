"""Batching Samples into Batch / Targets."""

from __future__ import annotations

import pytest
import torch

from polymax.data.collate import collate
from polymax.data.sample import Sample
from polymax.errors import UserError


def sample(name: str, *, depth: bool = False, semantic: bool = False, size=(4, 5)) -> Sample:
    h, w = size
    return Sample(image=torch.full((3, h, w), 7, dtype=torch.uint8), name=name,
                  depth=torch.full((h, w), 2.0) if depth else None,
                  semantic=torch.ones(h, w, dtype=torch.int64) if semantic else None)


def test_shapes_dtypes_and_missing_fields() -> None:
    batch = collate([sample("a", depth=True), sample("b", depth=True)])
    assert batch.images.shape == (2, 3, 4, 5) and batch.images.dtype == torch.float32
    assert batch.images.max() == 7.0
    assert batch.targets.depth.shape == (2, 4, 5) and batch.targets.depth.dtype == torch.float32
    assert batch.targets.semantic is None and batch.targets.panoptic is None and batch.targets.normals is None
    assert batch.targets.crowd is None and batch.names == ["a", "b"]


def test_mixed_presence_fills_with_invalid_values() -> None:
    batch = collate([sample("a", semantic=True), sample("b", depth=True)])
    assert batch.targets.semantic[0].eq(1).all() and batch.targets.semantic[1].eq(255).all()
    assert batch.targets.depth[0].eq(0).all() and batch.targets.depth[1].eq(2.0).all()


def test_different_sizes_are_rejected_with_names() -> None:
    with pytest.raises(UserError, match=r"'a' is 5x4, 'b' is 6x4"):
        collate([sample("a"), sample("b", size=(4, 6))])


def test_batch_to_moves_everything() -> None:
    batch = collate([sample("a", depth=True)]).to("cpu")
    assert batch.targets.depth.device.type == "cpu" and batch.targets.semantic is None
