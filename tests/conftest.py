"""Shared test fixtures. The default suite runs on 2 CPU cores; slow cases carry @pytest.mark.slow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The project's shared/ folder: beside the repository (CI and development) or $POLYMAX_SHARED."""
    return Path(os.environ.get("POLYMAX_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not path.is_dir():
        pytest.skip(f"shared/ folder not found at {path} (set POLYMAX_SHARED)")
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
