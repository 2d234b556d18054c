"""Shared test fixtures. The default suite runs on 2 CPU cores; slow cases carry @pytest.mark.slow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
PARITY_DIR = REPO_ROOT / "tests" / "fixtures" / "deeplab2_parity"
PARITY_FILES = ("coco_r50.npz", "coco_r50_manifest.json", "coco_convnext_tiny.npz", "coco_convnext_tiny_manifest.json")


@pytest.fixture(scope="session")
def parity() -> Path:
    """The deeplab2 golden fixtures, part of the repository: a missing file fails the test, it never skips it."""
    missing = [name for name in PARITY_FILES if not (PARITY_DIR / name).is_file()]
    if missing:
        pytest.fail(f"deeplab2 parity fixtures missing from {PARITY_DIR}: {', '.join(missing)}", pytrace=False)
    return PARITY_DIR


ONEFORMER_DIR = REPO_ROOT / "tests" / "fixtures" / "oneformer_hf"
ONEFORMER_FILES = ("manifest.json", "oneformer_hf.npz")


@pytest.fixture(scope="session")
def oneformer() -> Path:
    """The OneFormer golden outputs (Hugging Face transformers pieces), part of the repository: a missing file
    fails the test."""
    missing = [name for name in ONEFORMER_FILES if not (ONEFORMER_DIR / name).is_file()]
    if missing:
        pytest.fail(f"OneFormer fixtures missing from {ONEFORMER_DIR}: {', '.join(missing)}", pytrace=False)
    return ONEFORMER_DIR


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def depth_dir(tmp_path_factory) -> Path:
    """A saved, untrained (seeded) polymax_tiny_synth_depth model folder, one per test module (the predict CLI,
    video and worker tests; a module may define its own)."""
    import polymax

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("models") / "depth"
    polymax.save_pretrained(polymax.build_model("polymax_tiny_synth_depth"), path)
    return path
