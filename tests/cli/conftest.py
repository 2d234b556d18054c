"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import pytest
import torch

import polymax


@pytest.fixture(scope="module")
def depth_dir(tmp_path_factory):
    """A saved, untrained (seeded) polymax_tiny_synth_depth model folder, one per test module."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("models") / "depth"
    polymax.save_pretrained(polymax.build_model("polymax_tiny_synth_depth"), path)
    return path
